"""compare flow: RAG, fine-tuning or both? The base model and a fine-tuned run, closed-book and with retrieval
(and reranking), on the test split; the matrix, the verdict and the report as Prefect artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.artifacts import in_prefect_run
from flows.runners import RELEASES_MEMORY
from tasks.core.config import with_workspace
from tasks.core.workspace import Workspace
from tasks.evaluate.compare.report import markdown, matrix_rows
from tasks.evaluate.compare.run import compare
from tasks.evaluate.config import CompareConfig


@flow(name="compare", description="RAG, fine-tuning or both: the base model and a fine-tuned run, closed-book and "
      "with retrieval, with intervals, cost, failure attribution and a verdict.")
def compare_flow(config: CompareConfig = CompareConfig(), home: str | None = None) -> dict[str, Any]:  # noqa: B008
    """Returns the comparison: cells, comparisons, effects, verdict, report path."""
    logger = get_run_logger()
    ws = Workspace.from_env(home).ensure()
    config = with_workspace(ws, "compare", config)
    with ws.lock("compare"):
        res = compare_task(str(ws.root), config)
    logger.info("comparison %s%s: %s", res["compare_id"], " (reused)" if res["reused"] else "", res["verdict"])
    publish_compare_artifacts(res)
    return res


def publish_compare_artifacts(res: dict[str, Any]) -> None:
    """The verdict and matrix as markdown, and the matrix as a table artifact."""
    if not in_prefect_run():
        return
    create_markdown_artifact(markdown=markdown(res), key="compare-summary",
                             description="RAG, fine-tuning or both: verdict and matrix")
    create_table_artifact(table=matrix_rows(res), key="compare-matrix",
                          description="Each system and context mode: metric, interval against base closed-book, "
                          "cost and failure shares")


@task(name="compare_systems", cache_policy=NO_CACHE, **RELEASES_MEMORY)
def compare_task(home: str, config: CompareConfig) -> dict[str, Any]:
    return compare(Workspace(Path(home)), config)
