"""Retrieval configuration sweep: build one scratch collection per chunking setting, score every search mode on
a labelled query set through chunk-to-document mapping, rank, and optionally make the best the index config."""

from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.config import update_workspace_config
from tasks.core.workspace import Workspace, read_json
from tasks.index.build import _load_records, build_collection
from tasks.index.config import IndexConfig, SweepConfig
from tasks.index.embed import embed_texts
from tasks.index.qdrant import open_local
from tasks.index.retrieval_eval import retrieval_metrics
from tasks.index.search import search_collection
from tasks.index.verify import load_labelled_queries


def grid(cfg: SweepConfig) -> list[tuple[int, int]]:
    """(chunk size, overlap) pairs of the grid; overlaps not below the size are left out."""
    return [(s, o) for s, o in itertools.product(sorted(set(cfg.chunk_sizes)), sorted(set(cfg.chunk_overlaps))) if o < s]


def embed_queries(cfg: SweepConfig, out: Path) -> Path:
    """Embed the labelled questions once for the whole sweep (the chunking does not change them) into `out`."""

    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, embed_texts([q for q, _ in load_labelled_queries(cfg.queries)], cfg.index.embedding_model))
    return out


def score_setting(ws: Workspace, cfg: SweepConfig, dataset_version: str, size: int, overlap: int, scratch: Path,
                  query_vectors: Path | None = None) -> list[dict[str, Any]]:
    """Build the setting's collection in its own scratch engine folder and score each mode; one row per mode.
    `query_vectors`: the questions' embeddings from `embed_queries` (computed here when not given)."""

    icfg = cfg.index.model_copy(update={"chunk_size": size, "chunk_overlap": overlap, "dataset_version": dataset_version})
    IndexConfig.model_validate(icfg.model_dump())  # the same cross-field checks as a real index config
    labelled = load_labelled_queries(cfg.queries)
    folder = scratch / f"{size}-{overlap}"
    client = open_local(folder)
    try:
        t = time.perf_counter()
        chunks, _, timings = build_collection(client, "sweep__scratch", _load_records(ws, icfg, dataset_version), icfg)
        build_s = time.perf_counter() - t
        vectors = np.load(query_vectors if query_vectors else embed_queries(cfg, folder / "queries.npy"))
        if len(vectors) != len(labelled):
            raise ValueError(f"{query_vectors} holds {len(vectors)} query vectors for {len(labelled)} questions")
        rows = []
        for mode in cfg.modes:
            runs = {}
            for i, ((q, _), v) in enumerate(zip(labelled, vectors, strict=True)):
                hits = search_collection(client, "sweep__scratch", q, icfg, cfg.k * 5, mode, dense_vector=v.tolist())
                runs[str(i)] = list(dict.fromkeys(h["doc_id"] for h in hits))[: cfg.k]
            m = retrieval_metrics(runs, {str(i): rel for i, (_, rel) in enumerate(labelled)}, ks=(1, cfg.k))
            rows.append({"chunk_size": size, "chunk_overlap": overlap, "mode": mode, "chunks": len(chunks),
                         "build_s": round(build_s, 1), **{k: round(v, 4) for k, v in m.items() if k != "questions"},
                         "queries": m["questions"]})
        return rows
    finally:
        client.close()
        shutil.rmtree(folder, ignore_errors=True)


def rank(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Best first by the metric, then fewer chunks (cheaper to build and serve), then the smaller setting."""
    ranked = sorted(rows, key=lambda r: (-(r.get(metric) or 0.0), r["chunks"], r["chunk_size"], r["chunk_overlap"]))
    return [{"rank": i, **r} for i, r in enumerate(ranked, start=1)]


def apply_best(ws: Workspace, best: dict[str, Any], sweep_id: str) -> Path:
    """Write the winning chunk settings into the workspace config's `index:` section (other keys kept)."""
    return update_workspace_config(ws, {"index": {"chunk_size": best["chunk_size"],
                                                  "chunk_overlap": best["chunk_overlap"]},
                                        "search": {"mode": best["mode"]}}, f"written by ragtune sweep {sweep_id}")


def load_sweep(ws: Workspace, sweep_id: str) -> dict[str, Any] | None:
    return read_json(ws.reports / "sweeps" / f"{sweep_id}.json", default=None)
