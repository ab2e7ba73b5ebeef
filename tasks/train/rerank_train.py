"""`ragtune train-reranker`: fine-tune a cross-encoder on the SFT dataset's train split against the served
index, measure retrieval nDCG@10 on the test split with and without it, point `trained` at it if it helps."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from typing import Any

from tasks.core.provenance import provenance
from tasks.core.workspace import Workspace, atomic_write_json, read_json, read_pointer, utc_now
from tasks.index.config import RerankConfig
from tasks.index.qdrant import open_client
from tasks.index.rerank import (
    best_chunk,
    current_reranker,
    load_reranker,
    mine_examples,
    rerank_hits,
    rerankers_dir,
    train_reranker,
)
from tasks.index.retrieval_eval import retrieval_metrics
from tasks.index.served import require_served
from tasks.train.config import RerankerSettings, SFTDataConfig
from tasks.train.prompt import retrieve_contexts
from tasks.train.sft import load_split

log = logging.getLogger("ragtune.rerank")


def labelled_rows(ws: Workspace, data: SFTDataConfig, split: str) -> tuple[list[dict[str, Any]], str]:
    """(rows with a question and a doc_id, dataset version) of the latest SFT dataset's split."""
    base = ws.dataset_dir(data.dataset)
    version = read_pointer(base / "latest")
    if version is None:
        raise FileNotFoundError(f"no {data.dataset} dataset in {ws.root}: run `ragtune train` (or build the "
                                "SFT dataset) first")
    path = base / version
    if not (path / f"{split}.jsonl").exists():
        return [], version
    return [r for r in load_split(path, split) if r.get("doc_id")], version


def run_id_of(dataset_version: str, index_version: str, settings: RerankerSettings) -> str:
    """The run id: a digest of the inputs, so that a run on unchanged inputs is found and reused."""
    blob = {"dataset": dataset_version, "index": index_version, **settings.model_dump(mode="json")}
    return "rr-" + hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def mine_training_rows(ws: Workspace, data: SFTDataConfig, rows: list[dict[str, Any]],
                       settings: RerankerSettings) -> tuple[list[dict[str, Any]], str]:
    """Training rows for `train_reranker`: positives are the best chunk of each question's document in the
    served index, hard negatives the top hybrid hits from other documents. Returns (rows, index version)."""
    plain = data.model_copy(update={"rerank": RerankConfig()})
    questions = [r["question"] for r in rows]
    candidates, index_version = retrieve_contexts(ws, questions, plain, k=settings.candidates)
    client = open_client(ws)
    try:
        index = require_served(ws, data.index_name, client)
        positives = [[h] if (h := best_chunk(client, index.collection, r["question"], r["doc_id"], index.config))
                     else [] for r in rows]
    finally:
        client.close()
    relevant = [{r["doc_id"]} for r in rows]
    return mine_examples(questions, positives, candidates, relevant, settings.negatives), index_version


def measure(ws: Workspace, data: SFTDataConfig, rows: list[dict[str, Any]], reranker: str,
            settings: RerankerSettings) -> dict[str, Any]:
    """Doc-level retrieval metrics (nDCG@10, recall@k, MRR@10) of hybrid search and of hybrid + this reranker
    on the same `candidates` hits of each question."""
    plain = data.model_copy(update={"rerank": RerankConfig()})
    questions = [r["question"] for r in rows]
    hits, _ = retrieve_contexts(ws, questions, plain, k=settings.candidates)
    reranked = rerank_hits(load_reranker(reranker, settings.max_length), questions, hits, settings.candidates)
    relevant = {r["id"]: {r["doc_id"]} for r in rows}
    runs = {name: {r["id"]: [h["doc_id"] for h in hs] for r, hs in zip(rows, found, strict=True)}
            for name, found in (("hybrid", hits), ("rerank", reranked))}
    return {name: retrieval_metrics(run, relevant) for name, run in runs.items()}


def train_workspace_reranker(ws: Workspace, data: SFTDataConfig, settings: RerankerSettings | None = None,
                             min_improvement: float = 0.0) -> dict[str, Any]:
    """Mine, train (or reuse the run with the same inputs), measure on the test split, and write
    `rerankers/current.json` only when the reranker's nDCG@10 beats hybrid's by at least `min_improvement`
    (and by more than nothing). The run folder `rerankers/<run_id>/` holds the weights, then meta.json."""
    settings = settings or RerankerSettings()
    train_rows, dataset_version = labelled_rows(ws, data, "train")
    test_rows, _ = labelled_rows(ws, data, "test")
    if not train_rows or not test_rows:
        raise ValueError(f"SFT dataset {data.dataset}/{dataset_version} needs train and test questions with "
                         f"a doc_id ({len(train_rows)} train, {len(test_rows)} test)")
    with ws.lock("rerank"):
        examples, index_version = mine_training_rows(ws, data, train_rows, settings)
        run_id = run_id_of(dataset_version, index_version, settings)
        folder = rerankers_dir(ws) / run_id
        meta = read_json(folder / "meta.json", default=None)
        reused = meta is not None
        if not reused:
            shutil.rmtree(folder, ignore_errors=True)  # weights without meta.json: a run that did not finish
            trained = train_reranker(examples, folder, settings.base, epochs=settings.epochs,
                                     batch_size=settings.batch_size, learning_rate=settings.learning_rate,
                                     max_length=settings.max_length, seed=settings.seed)
            metrics = measure(ws, data, test_rows, str(folder), settings)
            base, new = metrics["hybrid"]["ndcg@10"], metrics["rerank"]["ndcg@10"]
            trained.pop("path")
            meta = {"run_id": run_id, "created_at": utc_now(), "dataset": data.dataset,
                    "dataset_version": dataset_version, "index_version": index_version,
                    "settings": settings.model_dump(mode="json"), "training": trained, "metrics": metrics,
                    "improvement": new - base, **provenance()}
            atomic_write_json(folder / "meta.json", meta)
        base, new = meta["metrics"]["hybrid"]["ndcg@10"], meta["metrics"]["rerank"]["ndcg@10"]
        passed = new > base and new - base >= min_improvement
        if passed:
            atomic_write_json(rerankers_dir(ws) / "current.json", {
                "run_id": run_id, "ndcg@10": new, "hybrid_ndcg@10": base, "dataset_version": dataset_version,
                "index_version": index_version, "at": utc_now()})
    current = current_reranker(ws)
    log.info("reranker %s: nDCG@10 hybrid %.4f, reranked %.4f; %s", run_id, base, new,
             "now `trained`" if passed else "not better: `trained` unchanged")
    return {"run_id": run_id, "path": str(folder), "reused": reused, "passed": passed, "hybrid_ndcg@10": base,
            "rerank_ndcg@10": new, "improvement": new - base, "min_improvement": min_improvement,
            "current": current and current["run_id"], "training": meta["training"],
            "metrics": meta["metrics"], "dataset_version": dataset_version, "index_version": index_version,
            "test_questions": len(test_rows)}


def describe(out: dict[str, Any]) -> list[str]:
    """The lines `ragtune train-reranker` prints."""
    tr = out["training"]
    state = ("reused: same inputs" if out["reused"]
             else f"trained: {tr['rows']} rows, {tr['steps']} steps, {tr['seconds']:.0f} s")
    by = f" by {out['min_improvement']:g}" if out["min_improvement"] else ""
    verdict = ("passed: `trained` now points at it" if out["passed"]
               else f"not above hybrid{by}: `trained` stays {out['current'] or 'unset'}")
    return [f"reranker {out['run_id']} ({state})",
            f"  retrieval nDCG@10 on {out['test_questions']} test questions: hybrid "
            f"{out['hybrid_ndcg@10']:.4f}, hybrid + rerank {out['rerank_ndcg@10']:.4f} "
            f"({out['improvement']:+.4f})",
            f"  {verdict}", f"  folder: {out['path']}"]
