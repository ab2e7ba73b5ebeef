"""The task runner the flows use, from one setting: threads (default), Dask (prefect-dask: a local cluster or a
scheduler address) or Ray (prefect-ray, the `ray` extra). Chosen by RAGTUNE_TASK_RUNNER when a flow module is
imported, so deployments set it in their job variables and the CLI with `--task-runner`."""

from __future__ import annotations

import os
from typing import Any

from tasks.core.memory import release_memory, return_big_blocks

KINDS = ("threads", "dask", "ray")

# every flow module imports this one: a process that runs flows hands its big tensors back to the OS when they
# are freed, instead of keeping them in glibc's heap (tasks.core.memory)
return_big_blocks()


def runner_kind() -> str:
    kind = os.environ.get("RAGTUNE_TASK_RUNNER", "threads").strip().lower() or "threads"
    if kind not in KINDS:
        raise ValueError(f"RAGTUNE_TASK_RUNNER must be one of {', '.join(KINDS)}, not {kind!r}")
    return kind


def runner_workers() -> int:
    """Workers of a local Dask or Ray cluster (RAGTUNE_RUNNER_WORKERS, default 2)."""
    return int(os.environ.get("RAGTUNE_RUNNER_WORKERS", "2"))


def distributed() -> bool:
    """Whether tasks may run in other processes or machines (then embedding is split into parts)."""
    return runner_kind() != "threads"


def make_task_runner(kind: str | None = None, address: str | None = None, workers: int | None = None) -> Any:
    """A Prefect task runner. Threads: Prefect's ThreadPoolTaskRunner. Dask and Ray connect to `address` (RAGTUNE_RUNNER_ADDRESS) when given, else start
    a local cluster of `workers` (RAGTUNE_RUNNER_WORKERS, default 2) single-threaded worker processes."""
    kind = kind or runner_kind()
    address = address or os.environ.get("RAGTUNE_RUNNER_ADDRESS") or None
    if kind == "threads":  # Prefect's default: as many threads as tasks are submitted
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner()
    workers = workers or runner_workers()
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                              "dashboard_address": None})
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise RuntimeError("RAGTUNE_TASK_RUNNER=ray needs prefect-ray: pip install 'ragtune[ray]'") from None
    return RayTaskRunner(address=address) if address else RayTaskRunner(init_kwargs={"num_cpus": workers})


def flow_task_runner() -> Any:
    """The runner for a flow decorator. Threads by default, built lazily enough that importing a flow module
    starts no cluster (Prefect starts the runner when the flow run begins)."""
    return make_task_runner()


def free_memory(task: Any, task_run: Any, state: Any) -> None:
    """A task hook (on completion and on failure) for the heavy steps: what the step freed goes back to the OS
    before the next one starts (`tasks.core.memory`)."""
    release_memory()


RELEASES_MEMORY = {"on_completion": [free_memory], "on_failure": [free_memory]}
