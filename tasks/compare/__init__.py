"""RAG, fine-tuning or both? The answer with the user's own data.

Entry: `compare(ws, CompareConfig)` (`tasks.compare.run`), the Prefect task `compare_task`, the flow
`flows/compare.py` and `ragtune compare`. The base model and a fine-tuned run answer the SFT test split
closed-book, with retrieval and (when a reranker is set) with reranked retrieval, with the same greedy decoding:

- `matrix`: prompts per mode, one model load for every cell, metric tables, cost, paired bootstrap pairs;
- `attribution`: why each wrong answer failed (retrieval miss, reader failure, verbosity), used by
  `tasks.evaluate` too;
- `verdict`: the one-sentence answer backed by the intervals;
- `report`: the terminal table, the Prefect markdown, the chart and the HTML page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.compare.matrix import CompareError
from tasks.compare.run import compare
from tasks.config import CompareConfig
from tasks.workspace import Workspace

__all__ = ["CompareError", "compare", "compare_task"]


@task(name="compare_systems", cache_policy=NO_CACHE)
def compare_task(home: str, config: CompareConfig) -> dict[str, Any]:
    return compare(Workspace(Path(home)), config)
