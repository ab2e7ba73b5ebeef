"""A question set from the served index: candidates from every document (structure, and optionally a generator
model), each checked and given one fate, split by document, published as a content-addressed version.

`datasets/questions/<version>/`: `pairs.jsonl` (the accepted pairs with their split), `manifest.jsonl` (every
candidate with its fate and reason), `stats.json`, `meta.json` (index state, document dataset, config, generator,
reviews, code, packages); then `latest` moves. A run on unchanged inputs finds its version and writes nothing."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.provenance import code_digest, file_digest, provenance
from tasks.core.records import read_records
from tasks.core.workspace import (
    PROJECT_ROOT,
    Workspace,
    atomic_write_json,
    publish_dir,
    read_json,
    read_jsonl,
    read_pointer,
    utc_now,
    write_jsonl,
    write_pointer,
)
from tasks.index.config import RerankConfig
from tasks.index.qdrant import open_client
from tasks.index.served import Served, require_served, served_chunks
from tasks.train.config import QuestionsConfig, SFTDataConfig
from tasks.train.prompt import retrieve_contexts
from tasks.train.questions import filters, review
from tasks.train.questions.structure import KINDS, generate
from tasks.train.splits import SPLITS, split_documents

log = logging.getLogger("ragtune.questions")
CODE = PROJECT_ROOT / "tasks" / "train" / "questions"
# (chunks) -> one (question, answer) or None per chunk; `name` identifies the model in provenance
Generator = Callable[[list[dict[str, Any]]], list[tuple[str, str] | None]]


class QuestionsError(RuntimeError):
    """A question set that cannot be built (nothing served, too few pairs kept); the message says what to do."""


@dataclass
class QuestionSet:
    version: str
    path: str
    counts: dict[str, int]
    splits: dict[str, int]
    reasons: list[dict[str, Any]]
    created: bool
    reused: bool


def pair_id(doc_id: str, question: str, answer: str) -> str:
    """Stable across runs: reviews refer to pairs by it."""
    return hashlib.sha256(json.dumps([doc_id, question, answer]).encode()).hexdigest()[:12]


def candidates_of(records: list[dict[str, Any]], chunks: list[dict[str, Any]], kinds: list[str],
                  ) -> list[dict[str, Any]]:
    """Structural candidates of every document, each cited by the chunk whose span holds its answer."""
    by_doc: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in chunks:
        by_doc[str(c.get("doc_id"))].append(c)
    out = []
    for r in records:
        for c in generate(r["text"], r.get("title") or r["doc_id"], tuple(k for k in KINDS if k in kinds)):
            holder = next((ch for ch in by_doc.get(r["doc_id"], []) if int(ch["char_start"]) <= c.start
                           and c.end <= int(ch["char_end"])), None)
            out.append({"doc_id": r["doc_id"], "kind": c.kind, "question": c.question,
                        "answer": " ".join(c.answer.split()), "span": [c.start, c.end], "context": c.context,
                        "chunk_id": holder["id"] if holder else None,
                        "chunk_text": holder["text"] if holder else ""})
    return out


def model_candidates(chunks: list[dict[str, Any]], generator: Generator, limit: int) -> list[dict[str, Any]]:
    """Pairs a generator model writes for up to `limit` chunks, spread evenly over the collection."""
    step = max(1, len(chunks) // limit) if limit else 1
    picked = chunks[::step][:limit]
    out = []
    for ch, pair in zip(picked, generator(picked), strict=True):
        if pair is None:
            out.append({"doc_id": ch["doc_id"], "kind": "model", "question": "", "answer": "", "span": None,
                        "context": ch.get("section") or "", "chunk_id": ch["id"], "chunk_text": ch["text"],
                        "error": "unparsed: the generator's reply held no question and answer"})
            continue
        q, a = pair
        out.append({"doc_id": ch["doc_id"], "kind": "model", "question": " ".join(q.split()),
                    "answer": " ".join(a.split()), "span": None, "context": ch.get("section") or "",
                    "chunk_id": ch["id"], "chunk_text": ch["text"]})
    return out


def check_candidates(ws: Workspace, cands: list[dict[str, Any]], cfg: QuestionsConfig) -> list[dict[str, Any]]:
    """Every candidate with `fate` and `reason`: length, support by its chunk, quoted answer, the per-document cap,
    near-duplicate questions, then the round trip through the served retriever (batched, survivors only)."""
    for c in cands:
        c["pair_id"] = pair_id(c["doc_id"], c["question"], c["answer"])
        reason = c.pop("error", None)
        if reason is None and c["chunk_id"] is None:
            reason = "no_chunk: the answer crosses a chunk boundary, so no one passage holds it"
        reason = reason or filters.check_length(c["question"], c["answer"], cfg.max_answer_chars)
        if reason is None:
            reason, how = filters.check_support(c["answer"], c["chunk_text"], cfg.min_support)
            c["support"] = how
        reason = reason or filters.check_quotes_answer(c["question"], c["answer"])
        c["fate"], c["reason"] = ("filtered", reason) if reason else ("accepted", "ok")
    _cap_per_document([c for c in cands if c["fate"] == "accepted"], cfg.max_per_document)
    live = [c for c in cands if c["fate"] == "accepted"]
    dups = filters.near_duplicates([c["question"] for c in live], cfg.duplicate_threshold, [c["answer"] for c in live])
    for c, dup in zip(live, dups, strict=True):
        if dup is not None:
            c["fate"], c["reason"] = "duplicate", f"near_duplicate: same question as pair {live[dup]['pair_id']}"
    live = [c for c in cands if c["fate"] == "accepted"]
    if live:
        data = SFTDataConfig(index_name=cfg.index_name, rerank=RerankConfig())  # the retriever as served
        found, _ = retrieve_contexts(ws, [c["question"] for c in live], data, k=cfg.round_trip_k)
        for c, hits in zip(live, found, strict=True):
            docs = list(dict.fromkeys(h["doc_id"] for h in hits))
            c["retrieved"] = docs[: cfg.round_trip_k]
            reason = filters.check_round_trip(c["doc_id"], docs, cfg.round_trip_k)
            if reason:
                c["fate"], c["reason"] = "filtered", reason
    return cands


def _cap_per_document(live: list[dict[str, Any]], cap: int) -> None:
    """Keep at most `cap` pairs per document, taking the kinds in turn (FAQ, table, setting, ...), so a long
    table does not crowd out everything else; the rest are filtered with the reason."""
    order = [*KINDS, "model"]
    by_doc: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in live:
        by_doc[c["doc_id"]].append(c)
    for items in by_doc.values():
        queues = {k: [c for c in items if c["kind"] == k] for k in order}
        kept = 0
        while kept < cap and any(queues.values()):
            for k in order:
                if queues[k] and kept < cap:
                    queues[k].pop(0)
                    kept += 1
        for rest in queues.values():
            for c in rest:
                c["fate"], c["reason"] = "filtered", f"over_cap: more than {cap} pairs from this document"


def assign_splits(cands: list[dict[str, Any]], cfg: QuestionsConfig) -> None:
    """Split by document: every pair of a document lands in that document's split."""
    docs = sorted({c["doc_id"] for c in cands if c["fate"] == "accepted"})
    split = split_documents(docs, cfg.validation_fraction, cfg.test_fraction, cfg.split_salt)
    for c in cands:
        c["split"] = split.get(c["doc_id"]) if c["fate"] == "accepted" else None


def manifest_line(c: dict[str, Any]) -> dict[str, Any]:
    keep = ("pair_id", "doc_id", "chunk_id", "kind", "question", "answer", "span", "context", "support",
            "retrieved", "fate", "reason", "checks", "split", "review")
    return {"unit": f"{c['doc_id']}#{c['pair_id']}", **{k: c.get(k) for k in keep}, "stage": "questions"}


def publish(ws: Workspace, cfg: QuestionsConfig, lines: list[dict[str, Any]], meta: dict[str, Any], run_id: str,
            ) -> QuestionSet:
    """Write the version folder (pairs, manifest, stats, then meta), rename it into place, move `latest`."""
    lines = sorted(lines, key=lambda m: m["unit"])
    pairs = [{"id": m["pair_id"], "question": m["question"], "answer": m["answer"], "doc_id": m["doc_id"],
              "chunk_id": m["chunk_id"], "kind": m["kind"], "split": m["split"]}
             for m in lines if m["fate"] == "accepted"]
    counts = Counter(m["fate"] for m in lines)
    counts = {"seen": len(lines), **{f: counts.get(f, 0) for f in ("accepted", "duplicate", "filtered")}}
    splits = {s: sum(p["split"] == s for p in pairs) for s in SPLITS}
    reasons = Counter((m["fate"], m["reason"].split(":", 1)[0]) for m in lines if m["fate"] != "accepted")
    top = [{"fate": f, "reason": r, "count": n} for (f, r), n in reasons.most_common()]
    version = hashlib.sha256(json.dumps({"pairs": pairs, "manifest": lines}, sort_keys=True).encode()).hexdigest()[:16]
    base = ws.dataset_dir(cfg.dataset)
    final = base / version
    created = False
    if not (final / "meta.json").exists():
        staging = base / f".staging-{run_id}"
        write_jsonl(staging / "pairs.jsonl", pairs)
        write_jsonl(staging / "manifest.jsonl", lines)
        atomic_write_json(staging / "stats.json", {"counts": counts, "splits": splits, "top_reasons": top,
                                                   "kinds": dict(Counter(p["kind"] for p in pairs)),
                                                   "documents": len({p["doc_id"] for p in pairs})})
        atomic_write_json(staging / "meta.json", {**meta, "dataset": cfg.dataset, "version": version,
                                                  "run_id": run_id, "created_at": utc_now(), **provenance()})
        created = publish_dir(staging, final)
    if read_pointer(base / "latest") != version:
        write_pointer(base / "latest", version)
    return QuestionSet(version, str(final), counts, splits, top, created, False)


def input_key(index: Served, cfg: QuestionsConfig, generator_name: str | None, reviews: Path) -> str:
    """What decides a question set: the served content, the config, the generator, the reviews and this code."""
    blob = {"index": index.state, "collection": index.collection, "config": cfg.model_dump(mode="json"),
            "generator": generator_name, "reviews": file_digest(reviews) if reviews.is_file() else None,
            "code": code_digest(CODE)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:20]


def build_question_set(ws: Workspace, cfg: QuestionsConfig, run_id: str, generator: Generator | None = None,
                       generator_name: str | None = None) -> QuestionSet:
    """Generate, check, split and publish (see module doc); unchanged inputs return the existing version."""
    client = open_client(ws)
    try:
        index = require_served(ws, cfg.index_name, client)
        key = input_key(index, cfg, generator_name, review.reviews_path(ws))
        done = read_pointer(ws.dataset_dir(cfg.dataset) / "by-input" / key)
        if done and (ws.dataset_dir(cfg.dataset) / done / "meta.json").exists():
            stats = read_json(ws.dataset_dir(cfg.dataset) / done / "stats.json")
            write_pointer(ws.dataset_dir(cfg.dataset) / "latest", done)
            return QuestionSet(done, str(ws.dataset_dir(cfg.dataset) / done), stats["counts"], stats["splits"],
                               stats["top_reasons"], False, True)
        chunks = served_chunks(client, index.collection)
    finally:
        client.close()
    dataset, version = index.config.dataset, index.meta.get("dataset_version")
    records = read_records(ws.dataset_dir(dataset) / str(version) / "records.parquet")
    cands = candidates_of(records, chunks, list(cfg.kinds))
    if generator is not None:
        cands += model_candidates(chunks, generator, cfg.generator_chunks)
    check_candidates(ws, cands, cfg)
    review.apply_reviews(cands, review.read_reviews(ws))
    assign_splits(cands, cfg)
    lines = [manifest_line(c) for c in cands]
    meta = {"index": {"name": index.name, "collection": index.collection, "state": index.state},
            "documents": {"dataset": dataset, "version": version}, "config": cfg.model_dump(mode="json"),
            "generator": generator_name, "input_key": key, "reviews": len(review.read_reviews(ws))}
    qs = publish(ws, cfg, lines, meta, run_id)
    write_pointer(ws.dataset_dir(cfg.dataset) / "by-input" / key, qs.version)
    log.info("question set %s: %s, splits %s", qs.version, qs.counts, qs.splits)
    require_enough(qs, cfg)
    return qs


def require_enough(qs: QuestionSet, cfg: QuestionsConfig) -> None:
    """Too few accepted pairs: a one-line error with the top reasons the rest were set aside."""
    if qs.counts["accepted"] >= cfg.min_pairs:
        return
    why = ", ".join(f"{r['reason']} {r['count']}" for r in qs.reasons[:4]) or "no candidates at all"
    raise QuestionsError(f"question set {qs.version}: {qs.counts['accepted']} pairs kept of {qs.counts['seen']} "
                         f"(min_pairs {cfg.min_pairs}; set aside: {why}); add Q/A files (train.data.qa_paths), a "
                         "generator model (--generator), or documents with FAQs, tables and headings")


def republish(ws: Workspace, cfg: QuestionsConfig, run_id: str) -> QuestionSet:
    """The latest question set with the current reviews applied, published as a new version (nothing is
    generated or retrieved again: a review only moves pairs between accepted and set aside)."""
    folder = latest_question_set(ws, cfg.dataset)
    if folder is None:
        raise QuestionsError("no question set yet: run `ragtune questions generate` first")
    meta = read_json(folder / "meta.json")
    lines = read_jsonl(folder / "manifest.jsonl")
    review.apply_reviews(lines, review.read_reviews(ws))
    assign_splits(lines, QuestionsConfig.model_validate(meta["config"]))
    keep = {k: meta[k] for k in ("index", "documents", "config", "generator", "input_key") if k in meta}
    return publish(ws, cfg, [{k: v for k, v in m.items()} for m in lines],
                   {**keep, "reviews": len(review.read_reviews(ws)), "parent": meta["version"]}, run_id)


def latest_question_set(ws: Workspace, dataset: str = "questions", version: str | None = None) -> Path | None:
    """The folder of the pinned or latest published question set, or None."""
    version = version or read_pointer(ws.dataset_dir(dataset) / "latest")
    if not version:
        return None
    folder = ws.dataset_dir(dataset) / version
    if not (folder / "meta.json").exists():
        raise QuestionsError(f"question set {version} is not in {ws.dataset_dir(dataset)}")
    return folder


def load_pairs(folder: Path) -> list[dict[str, Any]]:
    return read_jsonl(folder / "pairs.jsonl")
