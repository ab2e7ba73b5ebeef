"""The comparison matrix: the base model and a fine-tuned run, each closed-book, with retrieval and (when a
reranker is set) with reranked retrieval, answering the SFT test split with the same decoding. Every cell gets
the evaluation's metrics, its cost (prompt tokens, seconds per answer) and its failure attribution; paired
bootstrap intervals compare every cell with the base model closed-book, and the effects of the verdict."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.provenance import file_digest
from tasks.core.workspace import Workspace, read_json
from tasks.evaluate.attribution import attribute_all, shares
from tasks.evaluate.config import CompareConfig
from tasks.evaluate.evaluate import EvaluationError, resolve_candidate, run_meta
from tasks.evaluate.generations import SystemRunner
from tasks.evaluate.metrics import answer_table, paired_bootstrap
from tasks.index.config import RerankConfig
from tasks.index.rerank import resolve_reranker
from tasks.train import registry
from tasks.train.config import SFTDataConfig
from tasks.train.generate import BASE

log = logging.getLogger("ragtune.compare")
MODELS = ("base", "tuned")
MODES = {"closed": "closed-book", "rag": "retrieval", "rerank": "retrieval + rerank"}
REFERENCE_CELL = "base/closed"
# pairs compared besides "every cell vs base/closed": the verdict's effects
EXTRA_PAIRS = (("tuned/rag", "base/rag"), ("base/rerank", "base/rag"), ("tuned/rerank", "tuned/rag"))
RETRIEVAL_DEPTH = 10  # documents retrieved per question for the retrieval metrics (the prompt takes context_k)


class CompareError(RuntimeError):
    """A comparison that cannot run (no fine-tuned run, no test examples, no served index)."""


def resolve_tuned(ws: Workspace, run_id: str | None) -> tuple[dict[str, Any], str]:
    """(run meta, label) of the fine-tuned system: the given run, else the champion, else the challenger or the
    newest finished run. Nothing is registered or changed in the registry."""
    try:
        if run_id:
            meta = run_meta(ws, run_id)
        else:
            champ = registry.resolve(ws, "champion")
            meta = run_meta(ws, champ["run_id"]) if champ else resolve_candidate(ws, None)
    except EvaluationError as exc:
        raise CompareError(str(exc)) from exc
    version = next((r["version"] for r in registry.versions(ws) if r["run_id"] == meta["run_id"]), None)
    return meta, version or meta["run_id"]


def rerank_setting(cfg: CompareConfig, data: SFTDataConfig) -> RerankConfig | None:
    """The reranker of the rerank cells: the comparison's own setting, else the run's; None: no rerank cells."""
    if cfg.rerank.enabled:
        return cfg.rerank
    return data.rerank if data.rerank.enabled else None


def _rerank_digest(ws: Workspace, rr: RerankConfig | None) -> str | None:
    """What identifies the reranker's weights (a folder's safetensors digest, else its name)."""
    if rr is None:
        return None

    try:
        path = Path(resolve_reranker(rr.model, ws))
    except Exception:  # an unknown name fails later, where it is loaded, with its own message
        return rr.model
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    return ",".join(file_digest(f) for f in files) or rr.model


def compare_id(ws: Workspace, cfg: CompareConfig, meta: dict[str, Any], index_state: str | None,
               rr: RerankConfig | None) -> str:
    key = {"run": meta["run_id"], "adapter": file_digest(Path(meta["adapter_dir"]) / "adapter_model.safetensors"),
           "base": meta["base_model"], "dataset": meta["dataset_version"], "index": index_state,
           "rerank": rr and [rr.model_dump(mode="json"), _rerank_digest(ws, rr)],
           "config": cfg.model_dump(mode="json", exclude={"report_examples"})}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def mode_data(data: SFTDataConfig, mode: str, rr: RerankConfig | None) -> SFTDataConfig:
    """The run's prompt settings for one context mode: closed-book, retrieval without reranking, or reranked."""
    if mode == "closed":
        return data.model_copy(update={"rag_context": False})
    return data.model_copy(update={"rag_context": True, "rerank": rr if mode == "rerank" else RerankConfig()})


def run_cells(ws: Workspace, base_path: str, adapter_dir: str, rows: list[dict[str, Any]],
              inputs: dict[str, dict[str, Any]], cfg: CompareConfig) -> dict[str, dict[str, Any]]:
    """Answers, reference likelihoods, prompt tokens and generation seconds of every (model, mode) cell. A cell
    whose system answered the same prompts before (the evaluation's base model and candidate with retrieval)
    is read from the workspace with the seconds its answers took then; the others share one model load."""
    runner = SystemRunner(ws, base_path, {"tuned": adapter_dir}, cfg.batch_size, cfg.max_new_tokens,
                          cache=cfg.generation_cache)
    refs = [r["answer"] for r in rows]
    cells: dict[str, dict[str, Any]] = {}
    for name in MODELS:
        for mode, inp in inputs.items():
            out = runner.run(BASE if name == "base" else "tuned", inp["prompts"], refs)
            cells[f"{name}/{mode}"] = {"answers": out.answers, "nll": out.nll,
                                       "prompt_tokens": runner.prompt_tokens(inp["prompts"]),
                                       "generation_s": out.generation_s, "reused": out.reused}
            log.info("compare: %s/%s answered %d questions in %.1f s%s", name, mode, len(rows), out.generation_s,
                     " (answers reused)" if out.reused else "")
    runner.close()
    return cells


def score_cells(rows: list[dict[str, Any]], inputs: dict[str, dict[str, Any]], cells: dict[str, dict[str, Any]],
                cfg: CompareConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metric tables, per-cell summaries with cost and failure attribution)."""

    refs = [[r["answer"]] for r in rows]
    tables, summary = {}, {}
    for key, c in cells.items():
        name, mode = key.split("/")
        inp = inputs[mode]
        tables[key] = answer_table(c["answers"], refs, c["nll"], bertscore_model=cfg.bertscore_model,
                                   bertscore_layer=cfg.bertscore_layer)
        c["failures"] = attribute_all(rows, c["answers"], tables[key], inp, cfg.attribution_recall)
        n = len(rows)
        summary[key] = {
            "model": name, "mode": mode, "metrics": tables[key].summary(),
            "cost": {"prompt_tokens": float(np.mean(c["prompt_tokens"])) if n else 0.0,
                     "seconds_per_answer": (inp["seconds"] + c["generation_s"]) / n if n else 0.0,
                     "retrieval_s_per_answer": inp["seconds"] / n if n else 0.0,
                     "generation_s_per_answer": c["generation_s"] / n if n else 0.0},
            "failures": shares(c["failures"])}
    return tables, summary


def compare_tables(tables: dict[str, Any], cfg: CompareConfig) -> dict[str, dict[str, dict[str, float]]]:
    """Paired bootstrap of every cell against base/closed, and of the verdict's other pairs."""
    pairs = [(k, REFERENCE_CELL) for k in tables if k != REFERENCE_CELL]
    pairs += [(a, b) for a, b in EXTRA_PAIRS if a in tables and b in tables]
    return {f"{a} vs {b}": paired_bootstrap(tables[a], tables[b], cfg.bootstrap_samples, cfg.seed, cfg.confidence)
            for a, b in pairs}


def training_cost(meta: dict[str, Any]) -> dict[str, Any]:
    """What the fine-tuned system cost to make: training time, steps, tokens, device and adapter size."""
    adapter = Path(meta["adapter_dir"]) / "adapter_model.safetensors"
    metrics = meta.get("metrics") or {}
    return {"train_runtime_s": metrics.get("train_runtime_s"), "steps": meta.get("steps"),
            "tokens_seen": meta.get("tokens_seen"), "device": meta.get("device"),
            "quantization": meta.get("quantization"),
            "adapter_bytes": adapter.stat().st_size if adapter.exists() else None}


def load_comparison(folder: Path) -> dict[str, Any]:
    return read_json(folder / "metrics.json")
