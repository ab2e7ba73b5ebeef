"""Cross-encoder reranking of hybrid hits: load a reranker, score many questions' candidates in one batched
call, mine training examples, fine-tune one (from the packaged MiniLM by default) and resolve `trained`."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from tasks.core.workspace import Workspace, publish_dir, read_json
from tasks.index.config import RerankConfig
from tasks.index.embed import LOAD_LOCK, PACKAGED_MODEL, resolve_model_path
from tasks.index.search import location, search_collection

log = logging.getLogger("ragtune.rerank")
TRAINED = "trained"  # the workspace's current trained reranker (`rerankers/current.json`)
# a fast tokenizer is not safe across threads, and a model is shared by the engines a server swaps between
PREDICT_LOCK = threading.Lock()


class NoTrainedRerankerError(FileNotFoundError):
    """`trained` was asked for, but the workspace has no trained reranker that passed its check."""


def rerankers_dir(ws: Workspace) -> Path:
    return ws.root / "rerankers"


def current_reranker(ws: Workspace) -> dict[str, Any] | None:
    """The pointer to the workspace's current trained reranker (`rerankers/current.json`), or None."""
    return read_json(rerankers_dir(ws) / "current.json", default=None)


def resolve_reranker(name: str, ws: Workspace | None = None) -> str:
    """The folder or hub id to load: `trained` is the workspace's current trained reranker, `packaged:` names
    are the models inside installed wheels (as in tasks.index.embed), anything else is a folder or a hub id."""
    if name != TRAINED:
        return resolve_model_path(name)
    pointer = current_reranker(ws) if ws is not None else None
    if not pointer or not (rerankers_dir(ws) / pointer["run_id"]).is_dir():
        where = ws.root if ws is not None else "(no workspace given)"
        raise NoTrainedRerankerError(f"rerank model `trained`: no trained reranker in {where}: run `ragtune "
                                     "train-reranker` first, or set rerank.model to a cross-encoder folder")
    return str(rerankers_dir(ws) / pointer["run_id"])


def pin_reranker(cfg: RerankConfig, ws: Workspace | None) -> RerankConfig:
    """`cfg` with `trained` replaced by the folder it points at now, so that one run (a server's engine, an
    answer and its cache key) uses one reranker even if a new one is trained meanwhile."""
    if cfg.model != TRAINED:
        return cfg
    return cfg.model_copy(update={"model": resolve_reranker(TRAINED, ws)})


def reranker_id(cfg: RerankConfig, ws: Workspace | None) -> str | None:
    """What reranks now: None when off, the pinned folder for `trained` (`trained` itself while there is
    none), else the configured model. A file read; the server reloads its engine when it changes."""
    if not cfg.enabled:
        return None
    try:
        return pin_reranker(cfg, ws).model
    except NoTrainedRerankerError:
        return TRAINED


def _check_cross_encoder(path: str) -> None:
    """A sentence-transformers folder with a pooling module is a bi-encoder: as a cross-encoder its classifier
    head would be random."""
    modules = read_json(Path(path) / "modules.json", default=None) if os.path.isdir(path) else None
    if modules and any("Pooling" in str(m.get("type", "")) for m in modules):
        raise ValueError(f"{path} is an embedding model (bi-encoder), not a cross-encoder: train a reranker "
                         "from it with `ragtune train-reranker`, or point rerank.model at a cross-encoder")


def load_reranker(name: str, max_length: int = 256, ws: Workspace | None = None,
                  device: str | None = None) -> Any:
    """A sentence-transformers CrossEncoder; weights load from safetensors, remote code is never trusted.
    Loaded once per process and (resolved model, max length, device), under the embedding models' lock."""
    path = resolve_reranker(name, ws)
    with LOAD_LOCK:
        return _load_reranker(path, max_length, device)


@lru_cache(maxsize=2)
def _load_reranker(path: str, max_length: int, device: str | None) -> Any:
    from sentence_transformers import CrossEncoder

    _check_cross_encoder(path)
    model = CrossEncoder(path, device=device, max_length=max_length, trust_remote_code=False,
                         model_kwargs={"use_safetensors": True})
    log.info("reranker %s on %s (max %d tokens)", path, model.device, max_length)
    return model


def passage_text(hit: dict[str, Any]) -> str:
    """The passage as the cross-encoder reads it: `Title > section: text`, the way a prompt shows it."""
    text = " ".join(str(hit.get("text") or "").split())
    where = location(hit)
    return f"{where}: {text}" if where else text


def candidate_depth(k: int, cfg: RerankConfig) -> int:
    """How many hybrid hits to retrieve for a final top-k: `max(k, candidates)` when reranking, else k."""
    return max(k, cfg.candidates) if cfg.enabled else k


def rerank_hits(model: Any, questions: list[str], hits: list[list[dict[str, Any]]], k: int,
                batch_size: int = 32) -> list[list[dict[str, Any]]]:
    """Top-k of each question's hits by cross-encoder score, all pairs in one batched `predict` call. Hits
    are copies that keep their retrieval `score` and gain `rerank_score` (the raw logit: a sigmoid would
    saturate and tie confident hits); ties keep the retrieval order."""
    from torch import nn

    if len(questions) != len(hits):
        raise ValueError(f"{len(questions)} questions but {len(hits)} hit lists")
    pairs = [(q, passage_text(h)) for q, hs in zip(questions, hits, strict=True) for h in hs]
    if not pairs:
        return [[] for _ in hits]
    with PREDICT_LOCK:
        scores = model.predict(pairs, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True,
                               activation_fn=nn.Identity())
    out, at = [], 0
    for hs in hits:
        part = scores[at:at + len(hs)]
        scored = [{**h, "rerank_score": float(s)} for h, s in zip(hs, part, strict=True)]
        at += len(hs)
        order = sorted(range(len(scored)), key=lambda i: (-scored[i]["rerank_score"], i))
        out.append([scored[i] for i in order[:k]])
    return out


def rerank(questions: list[str], hits: list[list[dict[str, Any]]], k: int, cfg: RerankConfig,
           ws: Workspace | None = None) -> list[list[dict[str, Any]]]:
    """`rerank_hits` with the configured reranker (`trained` resolved in `ws`); without one, each list's
    top k as retrieved."""
    if not cfg.enabled:
        return [hs[:k] for hs in hits]
    if not any(hits):
        return [[] for _ in hits]
    model = load_reranker(str(cfg.model), cfg.max_length, ws)
    return rerank_hits(model, questions, hits, k, cfg.batch_size)


def best_chunk(client: Any, collection: str, question: str, doc_id: str, icfg: Any,
               ) -> dict[str, Any] | None:
    """The chunk of one document that hybrid search ranks first for the question (doc_id-filtered search)."""
    found = search_collection(client, collection, question, icfg, 1, "hybrid", {"doc_id": doc_id})
    return found[0] if found else None


def mine_examples(questions: list[str], positives: list[list[dict[str, Any]]],
                  candidates: list[list[dict[str, Any]]], relevant: list[set[str]], negatives: int = 3,
                  ) -> list[dict[str, Any]]:
    """Training rows {question, positive, negatives}: one per positive passage of a question, with the
    best-ranked chunks of the first `negatives` other documents among its hybrid candidates as hard negatives
    (documents in `relevant` never count as negatives). Questions without a positive or with too few
    negatives give no rows."""
    rows: list[dict[str, Any]] = []
    for q, pos, cands, rel in zip(questions, positives, candidates, relevant, strict=True):
        negs: dict[str, str] = {}
        for h in cands:
            if h["doc_id"] not in rel and h["doc_id"] not in negs:
                negs[h["doc_id"]] = passage_text(h)
        if len(negs) < negatives:
            continue
        rows += [{"question": q, "positive": passage_text(p), "negatives": list(negs.values())[:negatives]}
                 for p in pos]
    return rows


def train_reranker(rows: list[dict[str, Any]], out_dir: Path, base: str = PACKAGED_MODEL, *,
                   epochs: float = 2.0, batch_size: int = 4, learning_rate: float = 2e-4,
                   max_length: int = 256, seed: int = 0) -> dict[str, Any]:
    """Fine-tune a cross-encoder on `mine_examples` rows, listwise: per row a softmax cross-entropy over the
    positive and its hard negatives (`MultipleNegativesRankingLoss` on raw logits, plus one in-batch
    negative). On the sample it ranked far better after 30 steps than pointwise binary cross-entropy, which
    had not moved from chance. Starts from `base` (a bi-encoder such as the packaged MiniLM gets a new
    classifier head) and saves safetensors weights to `out_dir` (a staging folder renamed into place).
    `batch_size` counts questions: a step scores batch_size x (2 + negatives) pairs.
    Returns {path, rows, negatives, steps, train_loss, seconds}."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss
    from torch import nn
    from transformers import set_seed

    if not rows:
        raise ValueError("no training rows for the reranker (no question had a positive and enough "
                         "negatives)")
    n_neg = min(len(r["negatives"]) for r in rows)
    t = time.perf_counter()
    set_seed(seed)  # the new head's initialisation, the shuffling and the sampled in-batch negatives
    with LOAD_LOCK:
        model = CrossEncoder(resolve_reranker(base), num_labels=1, max_length=max_length,
                             trust_remote_code=False, model_kwargs={"use_safetensors": True})
    columns: dict[str, list[str]] = {"question": [r["question"] for r in rows],
                                     "positive": [r["positive"] for r in rows]}
    for i in range(n_neg):
        columns[f"negative_{i + 1}"] = [r["negatives"][i] for r in rows]
    staging = out_dir.parent / f".staging-{out_dir.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    args = CrossEncoderTrainingArguments(
        output_dir=str(staging / "trainer"), num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate, warmup_steps=0.1, seed=seed, save_strategy="no", report_to="none",
        logging_steps=25, disable_tqdm=True, dataloader_num_workers=0)
    loss = MultipleNegativesRankingLoss(model, num_negatives=1, scale=1.0, activation_fn=nn.Identity())
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=Dataset.from_dict(columns), loss=loss)
    result = trainer.train()
    shutil.rmtree(staging / "trainer", ignore_errors=True)
    model.save_pretrained(str(staging), safe_serialization=True)
    publish_dir(staging, out_dir)
    out = {"path": str(out_dir), "rows": len(rows), "negatives": n_neg, "steps": int(result.global_step),
           "train_loss": float(result.training_loss), "seconds": time.perf_counter() - t}
    log.info("reranker trained: %s", out)
    return out
