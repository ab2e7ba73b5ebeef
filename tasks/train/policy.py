"""The retraining policy: after an index update, compare the documents and the Q/A set with what the champion was
trained on, and decide — with the numbers and reasons recorded either way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.core.config import resolve_local_source
from tasks.core.workspace import Workspace, read_json, read_jsonl, utc_now, write_jsonl
from tasks.ingest.publish import latest_version
from tasks.train import registry
from tasks.train.config import RetrainPolicy, SFTDataConfig
from tasks.train.questions.build import load_pairs
from tasks.train.sft import qa_sources


def changed_fraction(old: dict[str, str], new: dict[str, str]) -> float:
    """Share of documents (doc_id -> content hash, the union of both sets) that were added, removed or changed."""
    union = set(old) | set(new)
    if not union:
        return 0.0
    differ = sum(1 for d in union if old.get(d) != new.get(d))
    return differ / len(union)


def qa_lines(paths: list[str]) -> int:
    """Non-empty lines of the Q/A files (every line is one unit of the SFT dataset's manifest)."""
    total = 0
    for p in paths:
        path = resolve_local_source(p)
        if path and path.is_file():
            with path.open(encoding="utf-8") as fh:
                total += sum(1 for line in fh if line.strip())
    return total


def qa_units(ws: Workspace, data: SFTDataConfig) -> int:
    """Q/A units the next SFT dataset would read, feedback aside: the Q/A files' lines (the bundled sample's on the
    bundled sample corpus) plus the pairs of the generated question set."""
    try:
        sources = qa_sources(ws, data)
    except FileNotFoundError:  # no Q/A data at all (training would stop and say why), or a missing file
        return 0
    pairs = len(load_pairs(sources.question_set)) if sources.question_set is not None else 0
    return qa_lines([str(p) for p in sources.files]) + pairs


def feedback_lines(ws: Workspace) -> int:
    """Accepted feedback pairs waiting in `feedback/accepted.jsonl` (see tasks.serve.feedback)."""
    path = ws.root / "feedback" / "accepted.jsonl"
    if not path.is_file():
        return 0
    with path.open(encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def feedback_units(sft_dir: Path) -> int:
    """Feedback lines an SFT dataset version already read (its manifest lines with source: feedback)."""
    path = sft_dir / "manifest.jsonl"
    return sum(1 for m in read_jsonl(path) if m.get("source") == "feedback") if path.is_file() else 0


def _doc_hashes(ws: Workspace, dataset: str, version: str) -> dict[str, str] | None:
    path = ws.dataset_dir(dataset) / version / "records.parquet"
    if not path.exists():
        return None
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["doc_id", "content_hash"]).to_pydict()
    return dict(zip(table["doc_id"], table["content_hash"], strict=True))


def decide(ws: Workspace, policy: RetrainPolicy, data: SFTDataConfig) -> dict[str, Any]:
    """{retrain, reasons, numbers}: retrain when there is no champion, when the champion's document set is
    unknown or gone, when the documents changed by at least `min_changed_fraction`, or when the Q/A files and the
    accepted feedback pairs (with `data.include_feedback`) grew by at least `min_new_examples` lines."""
    latest = latest_version(ws, policy.dataset)
    champ = registry.resolve(ws, "champion")
    numbers: dict[str, Any] = {"latest_documents": latest, "champion": champ and champ["version"]}
    if latest is None:
        return {"retrain": False, "reasons": ["no document dataset published yet"], "numbers": numbers}
    if champ is None:
        return {"retrain": True, "reasons": ["there is no champion yet"], "numbers": numbers}
    meta = read_json(ws.models / champ["run_id"] / "meta.json", default={}) or {}
    reasons = []
    base_docs = meta.get("docs_dataset_version")
    numbers["champion_documents"] = base_docs
    old = _doc_hashes(ws, policy.dataset, base_docs) if base_docs else None
    if old is None:
        reasons.append("the champion's document set is unknown or no longer on disk")
    else:
        frac = changed_fraction(old, _doc_hashes(ws, policy.dataset, latest) or {})
        numbers["changed_fraction"] = round(frac, 4)
        if frac >= policy.min_changed_fraction:
            reasons.append(f"{frac:.1%} of documents changed since {base_docs} (threshold "
                           f"{policy.min_changed_fraction:.0%})")
    sft_dir = ws.dataset_dir(meta.get("dataset", "sft")) / str(meta.get("dataset_version"))
    seen_before = (read_json(sft_dir / "stats.json", default={}) or {}).get("counts", {}).get("seen")
    # accepted feedback pairs join the next SFT dataset as Q/A lines (its manifest's `seen` counts them too)
    fb_now = feedback_lines(ws) if data.include_feedback else 0
    fb_new = fb_now - feedback_units(sft_dir)
    now = qa_units(ws, data) + fb_now
    numbers.update(qa_lines_now=now, qa_lines_champion=seen_before, feedback_pairs_now=fb_now)
    incl = f" (incl. {fb_new} accepted feedback pairs)" if fb_new > 0 else ""
    if seen_before is not None and now - seen_before >= policy.min_new_examples:
        reasons.append(f"{now - seen_before} new Q/A lines{incl} (threshold {policy.min_new_examples})")
    if reasons:
        return {"retrain": True, "reasons": reasons, "numbers": numbers}
    detail = [f"{numbers.get('changed_fraction', 0):.1%} of documents changed (threshold "
              f"{policy.min_changed_fraction:.0%})"]
    if seen_before is not None:
        detail.append(f"{now - seen_before} new Q/A lines{incl} (threshold {policy.min_new_examples})")
    return {"retrain": False, "reasons": detail, "numbers": numbers}


def record(ws: Workspace, decision: dict[str, Any], trigger: dict[str, Any] | None = None) -> dict[str, Any]:
    """Append the decision to `registry/retrain_decisions.jsonl` (the log of every policy evaluation)."""
    entry = {"at": utc_now(), **decision, "trigger": trigger or {}}
    path = ws.registry / "retrain_decisions.jsonl"
    write_jsonl(path, [*(read_jsonl(path) if path.exists() else []), json.loads(json.dumps(entry, default=str))])
    return entry


def decisions(ws: Workspace) -> list[dict[str, Any]]:
    path = Path(ws.registry) / "retrain_decisions.jsonl"
    return read_jsonl(path) if path.exists() else []
