"""`ragtune calibrate`: the "not found in the documents" threshold, chosen on the evaluation split (answerable
questions) and off-topic questions, written to `serve/calibration.json` with the curve behind it."""

from __future__ import annotations

from typing import Any

from tasks.core.config import resolve_local_source
from tasks.core.workspace import Workspace, atomic_write_json, read_json, read_jsonl, read_pointer, utc_now
from tasks.serve.engine import Retriever, desired_state
from tasks.serve.guardrails import calibration_path
from tasks.train import registry
from tasks.train.sft import load_split


def choose_threshold(in_domain: list[tuple[float, bool]], off_topic: list[float]) -> tuple[float, list[dict[str, Any]]]:
    """The support threshold that makes the most right decisions, and the curve behind it.

    `in_domain`: (support, hit) per evaluation question, hit = its reference document was in the prompt's
    context; `off_topic`: supports of questions the documents do not answer. A decision is right when an
    in-domain question with a hit is answered or an off-topic question is refused. Ties go to the lower
    threshold (answering more)."""
    cands = sorted({0.0, *(round(s, 4) for s, _ in in_domain), *(round(s, 4) for s in off_topic)})
    total = len(in_domain) + len(off_topic)
    curve = []
    for t in cands:
        answered = [(s, h) for s, h in in_domain if s >= t]
        right = sum(h for _, h in answered) + sum(s < t for s in off_topic)
        curve.append({"threshold": t, "answer_rate": len(answered) / len(in_domain) if in_domain else 0.0,
                      "answered_accuracy": (sum(h for _, h in answered) / len(answered)) if answered else None,
                      "off_topic_refused": (sum(s < t for s in off_topic) / len(off_topic)) if off_topic else None,
                      "accuracy": right / total if total else 0.0})
    best = max(curve, key=lambda r: (r["accuracy"], -r["threshold"]))
    return best["threshold"], curve


def evaluation_questions(ws: Workspace, model: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """Test and validation questions of the champion's SFT dataset (else the latest one), with their reference
    doc ids; returns (rows, where they come from)."""
    meta = read_json(ws.models / model["run_id"] / "meta.json", default={}) if model.get("run_id") else {}
    name = (meta or {}).get("dataset") or model["data"].dataset
    version = (meta or {}).get("dataset_version") or read_pointer(ws.dataset_dir(name) / "latest")
    if not version:
        raise FileNotFoundError(f"no SFT dataset in {ws.dataset_dir(name)}: train once (`ragtune train` or "
                                "`ragtune demo`) before calibrating")
    folder = ws.dataset_dir(name) / version
    rows = [r for split in ("test", "validation") if (folder / f"{split}.jsonl").exists()
            for r in load_split(folder, split) if r.get("doc_id")]
    return rows, f"{name}/{version} (test + validation)"


def calibrate(ws: Workspace, cfg: Any) -> dict[str, Any]:
    """Choose the not-found threshold on the evaluation split (answerable questions) and the off-topic set; write
    `serve/calibration.json` with the curve and the evaluation split's supports (the monitor's reference)."""
    state = desired_state(ws, cfg)
    if state["collection"] is None:
        raise FileNotFoundError(f"no index named {cfg.index_name!r} is served: run `ragtune index` first")

    champ = registry.resolve(ws, "champion")
    rows, origin = evaluation_questions(ws, {**state, "run_id": champ and champ["run_id"]})
    off_path = resolve_local_source(cfg.off_topic_questions)
    off = [r["question"] for r in read_jsonl(off_path)] if off_path and off_path.is_file() else []
    k = cfg.k or state["data"].context_k
    retriever = Retriever(ws, cfg.index_name, state["collection"], rerank=state["data"].rerank)  # as served
    try:
        found = retriever.search_many([(q, k, None) for q in [r["question"] for r in rows] + off])
        in_domain = [(support or 0.0, r["doc_id"] in {h["doc_id"] for h in hits})
                     for r, (hits, support) in zip(rows, found[:len(rows)], strict=True)]
        off_scores = [support or 0.0 for _, support in found[len(rows):]]
    finally:
        retriever.close()
    threshold, curve = choose_threshold(in_domain, off_scores)
    chosen = next(c for c in curve if c["threshold"] == threshold)
    out = {"threshold": threshold, "questions": len(in_domain), "off_topic": len(off_scores), "source": origin,
           "k": k, "model": state["version"], "index_version": state["index_state"], "chosen": chosen,
           "no_threshold": curve[0], "reference_scores": [round(s, 4) for s, _ in in_domain],
           "off_topic_scores": [round(s, 4) for s in off_scores], "curve": curve, "created_at": utc_now()}
    atomic_write_json(calibration_path(ws), out)
    return out
