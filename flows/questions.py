"""questions flow: generate, check and publish a question set from the served index (training and evaluation
data from the user's own corpus); the retraining flows run it when the corpus changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.artifacts import in_prefect_run
from tasks.core.config import with_workspace
from tasks.core.workspace import Workspace, new_run_id, read_jsonl
from tasks.index.served import served_collection
from tasks.train.config import QuestionsConfig, SFTDataConfig
from tasks.train.questions import review
from tasks.train.questions.build import (
    QuestionsError,
    QuestionSet,
    build_question_set,
    latest_question_set,
    republish,
)
from tasks.train.questions.generator import describe, make_generator
from tasks.train.sft import corpus_is_sample


@flow(name="questions", description="Generate Q/A pairs from the indexed corpus, check each, split by document.")
def questions_flow(config: QuestionsConfig = QuestionsConfig(), home: str | None = None) -> dict[str, Any]:  # noqa: B008
    """Returns the question set: version, folder, counts by fate, splits, the top reasons pairs were set aside."""
    logger = get_run_logger()
    ws = Workspace.from_env(home).ensure()
    config = with_workspace(ws, "questions", config)
    with ws.lock("questions"):
        qs = build_questions_task(str(ws.root), config)
    out = {"version": qs.version, "path": qs.path, "counts": qs.counts, "splits": qs.splits, "top_reasons": qs.reasons,
           "reused": qs.reused, "generator": describe(config)}
    logger.info("question set %s%s: %s, splits %s", qs.version, " (reused)" if qs.reused else "", qs.counts,
                qs.splits)
    publish_questions_artifact(out)
    return out


@task(name="build_question_set", cache_policy=NO_CACHE)
def build_questions_task(home: str, config: QuestionsConfig) -> QuestionSet:
    ws = Workspace(Path(home))
    return build_question_set(ws, config, new_run_id(), make_generator(ws, config), describe(config))


def generation_needed(ws: Workspace, data: SFTDataConfig) -> bool:
    """Whether a training run on this workspace should (re)generate its question set first: pairs are wanted
    (`questions` is not none) and either nothing else gives Q/A data (no Q/A files, not the bundled sample) or a
    question set already exists and must follow the corpus. Nothing to generate from while no index is served
    (training then says what is missing)."""
    if data.questions == "none" or served_collection(ws, data.index_name) is None:
        return False
    if data.questions == "generated" or latest_question_set(ws) is not None:
        return True
    return not data.qa_paths and not corpus_is_sample(ws, data)


def publish_questions_artifact(out: dict[str, Any]) -> None:
    if not in_prefect_run():
        return
    c = out["counts"]
    lines = [f"# Question set `{out['version']}`{' (reused)' if out['reused'] else ''}", "",
             f"{c['seen']} candidates: **{c['accepted']} accepted**, {c['duplicate']} duplicate, "
             f"{c['filtered']} set aside; splits " + ", ".join(f"{k} {v}" for k, v in out["splits"].items()), "",
             "| fate | reason | count |", "|---|---|---:|"]
    lines += [f"| {r['fate']} | {r['reason']} | {r['count']} |" for r in out["top_reasons"][:10]]
    create_markdown_artifact(markdown="\n".join(lines), key="questions-summary",
                             description="Generated question set: fates and reasons")


@flow(name="questions-review", description="Record review decisions and publish the question set they make.")
def questions_review_flow(config: QuestionsConfig = QuestionsConfig(), pair_ids: list[str] | None = None,  # noqa: B008
                          decision: str = "accepted", reason: str = "", by: str = "reviewer",
                          home: str | None = None) -> dict[str, Any]:
    """Accept or reject pairs of the latest question set; the result is a new version (nothing regenerated)."""
    ws = Workspace.from_env(home).ensure()
    config = with_workspace(ws, "questions", config)
    if decision not in ("accepted", "rejected"):
        raise ValueError(f"decision must be accepted or rejected, not {decision!r}")
    with ws.lock("questions"):
        folder = latest_question_set(ws, config.dataset)
        if folder is None:
            raise QuestionsError("no question set yet: run `ragtune questions generate` first")
        known = {m["pair_id"] for m in read_jsonl(folder / "manifest.jsonl")}
        review.record(ws, list(pair_ids or []), decision, reason, by, known)
        qs = republish(ws, config, new_run_id())
    return {"version": qs.version, "path": qs.path, "counts": qs.counts, "splits": qs.splits, "decision": decision,
            "pairs": list(pair_ids or [])}
