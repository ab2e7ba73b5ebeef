"""Prefect flows, one module per stage, and the `ragtune` command line (`flows/cli/`).

Flows orchestrate: they take the parameters (pydantic stage configs, rendered as forms in the Prefect UI),
complete them from the workspace's config.yaml, hold the workspace locks, call the `@task` wrappers (defined
here, next to the flow that runs them) over the plain functions of `tasks/`, publish artifacts
(`flows/artifacts.py`) and emit events (`flows/events.py`). Task runners (threads, Dask, Ray) come from
`flows/runners.py`."""

from tasks.index.qdrant import register_secret_source


def _prefect_secret(name: str) -> str:
    """The value of the Prefect Secret block `name` (ValueError when it cannot be loaded)."""
    from prefect.blocks.system import Secret  # Prefect's client: imported only when a block is named

    return Secret.load(name).get()


register_secret_source(_prefect_secret)
