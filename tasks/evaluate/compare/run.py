"""`compare`: build the matrix, score it, attribute the failures, state the verdict and publish
`comparisons/<id>/` (examples.jsonl, metrics.json last) and the HTML report; the same inputs reuse it."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from tasks.core.provenance import provenance
from tasks.core.workspace import (
    Workspace,
    atomic_write_json,
    atomic_write_text,
    new_run_id,
    publish_dir,
    read_json,
    utc_now,
    write_jsonl,
)
from tasks.evaluate.compare.matrix import (
    RETRIEVAL_DEPTH,
    CompareError,
    compare_id,
    compare_tables,
    mode_data,
    rerank_setting,
    resolve_tuned,
    run_cells,
    score_cells,
    training_cost,
)
from tasks.evaluate.compare.report import render_html
from tasks.evaluate.compare.verdict import effects_of, recommendation, verdict
from tasks.evaluate.config import CompareConfig
from tasks.evaluate.metrics import as_jsonable
from tasks.index.retrieval_eval import retrieval_metrics
from tasks.index.served import served_state
from tasks.train.config import SFTDataConfig
from tasks.train.model import resolve_base_model
from tasks.train.prompt import serving_prompts
from tasks.train.sft import load_split

log = logging.getLogger("ragtune.compare")


def report_path(ws: Workspace, cid: str) -> Path:
    return ws.reports / "comparisons" / f"{cid}.html"


def compare(ws: Workspace, cfg: CompareConfig) -> dict[str, Any]:
    """The comparison of the fine-tuned run (see `tasks.evaluate.compare`), reused when its inputs have not changed."""
    meta, label = resolve_tuned(ws, cfg.candidate)
    data = SFTDataConfig.model_validate(meta["config"]["data"])
    collection, index_state = served_state(ws, data.index_name)
    if collection is None:
        raise CompareError(f"the retrieval cells need a served index named {data.index_name!r} in {ws.root}: "
                           "run `ragtune index` first")
    rr = rerank_setting(cfg, data)
    cid = compare_id(ws, cfg, meta, index_state, rr)
    final = ws.root / "comparisons" / cid
    if (final / "metrics.json").exists():
        out = read_json(final / "metrics.json")
        if not Path(out["report"]).exists():
            write_report(ws, final)
        return {**out, "reused": True}

    rows = load_split(ws.dataset_dir(meta["dataset"]) / meta["dataset_version"], cfg.split)[: cfg.max_examples]
    if not rows:
        raise CompareError(f"SFT dataset {meta['dataset_version']} has no {cfg.split} examples")
    t = time.perf_counter()
    modes = ["closed", "rag", *(["rerank"] if rr else [])]
    inputs = {m: serving_prompts(ws, rows, mode_data(data, m, rr), RETRIEVAL_DEPTH) for m in modes}
    cells = run_cells(ws, resolve_base_model(ws, meta["base_model"]), meta["adapter_dir"], rows, inputs, cfg)
    tables, summary = score_cells(rows, inputs, cells, cfg)
    comparisons = compare_tables(tables, cfg)
    effects = effects_of(comparisons, cfg.metric)

    relevant = {r["id"]: {r["doc_id"]} for r in rows if r.get("doc_id")}
    ks = sorted({1, data.context_k, 10})
    retrieval = {m: retrieval_metrics({r["id"]: inputs[m]["ranked"][i] for i, r in enumerate(rows)
                                       if inputs[m]["ranked"][i]}, relevant, ks=ks) for m in modes if m != "closed"}
    out = {"compare_id": cid, "path": str(final), "report": str(report_path(ws, cid)), "created_at": utc_now(),
           "tuned": {"label": label, "run_id": meta["run_id"], "base_model": meta["base_model"],
                     **training_cost(meta)},
           "dataset_version": meta["dataset_version"], "index_version": index_state, "split": cfg.split,
           "examples": len(rows), "metric": cfg.metric, "rerank": rr and rr.model_dump(mode="json"),
           "cells": summary, "comparisons": comparisons, "effects": effects, "retrieval": retrieval,
           "context_k": data.context_k, "verdict": verdict(effects, cfg.metric, len(rows), cfg.confidence, label),
           "recommendation": recommendation(effects, label), "seconds": time.perf_counter() - t,
           "config": cfg.model_dump(mode="json"), "reused": False}
    _publish(ws, final, out, rows, inputs, cells, tables)
    log.info("comparison %s: %s", cid, out["verdict"])
    return out


def _publish(ws: Workspace, final: Path, out: dict[str, Any], rows, inputs, cells, tables) -> None:
    """examples.jsonl, then metrics.json, into a staging folder renamed into place; then the HTML report."""
    staging = final.parent / f".staging-{new_run_id()}"
    examples = []
    for i, r in enumerate(rows):
        ex: dict[str, Any] = {"id": r["id"], "question": r["question"], "reference": r["answer"],
                              "doc_id": r.get("doc_id")}
        for mode, inp in inputs.items():
            if mode != "closed":
                ex[f"context_{mode}"] = inp["contexts"][i]
                ex[f"retrieved_{mode}"] = inp["ranked"][i][:10]
        for key, c in cells.items():
            ex[key] = {"answer": c["answers"][i], "exact_match": float(tables[key].stats["exact_match"][i, 0]),
                       "token_f1": float(tables[key].stats["token_f1"][i, 0]), "failure": c["failures"][i],
                       "prompt_tokens": c["prompt_tokens"][i]}
        examples.append(ex)
    write_jsonl(staging / "examples.jsonl", examples)
    atomic_write_json(staging / "metrics.json", as_jsonable({**out, **provenance()}))
    publish_dir(staging, final)
    write_report(ws, final)


def write_report(ws: Workspace, folder: Path) -> Path:
    """The HTML report of a comparison folder (re-creatable from its files)."""

    data = read_json(folder / "metrics.json")
    examples = [json.loads(x) for x in (folder / "examples.jsonl").read_text(encoding="utf-8").splitlines() if x]
    path = report_path(ws, data["compare_id"])
    atomic_write_text(path, render_html(data, examples))
    return path
