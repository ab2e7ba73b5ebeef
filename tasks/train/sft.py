"""SFT dataset: Q/A files -> chat `messages` (with retrieved context), split by question hash with paraphrases
kept together, validated with Great Expectations, published as a versioned dataset with a manifest."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.config import SAMPLE_DIR, resolve_local_source
from tasks.core.provenance import provenance
from tasks.core.records import Fate
from tasks.core.workspace import (
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
from tasks.index.served import served
from tasks.ingest.dedup import NearDuplicateIndex, signature, tokens
from tasks.ingest.publish import count_fates, latest_version
from tasks.ingest.validate import run_suite
from tasks.train.config import SFTDataConfig
from tasks.train.prompt import build_messages, format_context, retrieve_contexts
from tasks.train.questions.build import latest_question_set, load_pairs
from tasks.train.splits import SPLITS, assign_split

log = logging.getLogger("ragtune.sft")
ROLE_PATTERN = r"^(?:system,)?(?:user,assistant,)*user,assistant$"


@dataclass
class QAItem:
    """One parsed Q/A unit: a question and its answer, or a whole conversation given as `messages`."""

    unit: str
    id: str
    question: str
    answer: str
    doc_id: str | None = None
    context: str | None = None
    messages: list[dict[str, str]] | None = None  # given directly in the input (validated, not rebuilt)
    source: str = "qa"  # provenance: "qa" (the user's files), "feedback" (accepted review items), "generated"
    request_id: str | None = None  # the served request a feedback pair came from
    split: str | None = None  # fixed by its source (generated pairs are split by document), else by hash
    origin: dict[str, Any] | None = None  # where a generated pair came from (question set, chunk, kind)


def normalize_question(text: str) -> str:
    """Case-, accent-width- and punctuation-insensitive form: the key of exact duplicates."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.findall(r"[^\W_]+", text))


def read_qa_files(paths: list[Path], source: str = "qa") -> tuple[list[QAItem], list[Fate]]:
    """Parse JSONL Q/A files. Lines are units (`path#<id>` or `path#line-N`, `feedback/path#...` for the accepted
    feedback pairs); unusable lines are quarantined."""
    items: list[QAItem] = []
    fates: list[Fate] = []
    for path in paths:
        name = f"feedback/{path.name}" if source == "feedback" else path.name
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            unit = f"{name}#line-{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                fates.append(Fate(unit, "quarantined", f"json: invalid JSON ({exc.msg})", stage="sft"))
                continue
            if not isinstance(row, dict):
                fates.append(Fate(unit, "quarantined", "json: not an object", stage="sft"))
                continue
            rid = str(row.get("id") or f"{path.stem}-{n}")
            unit = f"{name}#{rid}" if row.get("id") else unit
            if "messages" in row:
                msgs = row["messages"]
                if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
                    fates.append(Fate(unit, "quarantined", "messages: not a list of {role, content}", stage="sft"))
                    continue
                users = [m.get("content") for m in msgs if m.get("role") == "user"]
                answers = [m.get("content") for m in msgs if m.get("role") == "assistant"]
                items.append(QAItem(unit, rid, str(users[-1] if users else ""), str(answers[-1] if answers else ""),
                                    row.get("doc_id"), None, [{"role": str(m.get("role")), "content": m.get("content")}
                                                              for m in msgs]))
                continue
            q, a = row.get("question"), row.get("answer")
            if not isinstance(q, str) or not q.strip():
                fates.append(Fate(unit, "quarantined", "empty_question: no question text", stage="sft"))
                continue
            if not isinstance(a, str) or not a.strip():
                fates.append(Fate(unit, "quarantined", "empty_answer: no answer text", stage="sft"))
                continue
            ctx = row.get("context")
            items.append(QAItem(unit, rid, q.strip(), a.strip(), row.get("doc_id"),
                                ctx if isinstance(ctx, str) and ctx.strip() else None, source=source,
                                request_id=str(row["request_id"]) if source == "feedback" and row.get("request_id")
                                else None))
    return items, fates


def drop_duplicates(items: list[QAItem]) -> tuple[list[QAItem], list[Fate]]:
    """The first item of each normalised question is kept; later ones are duplicates (even with another
    answer: two labels for one question would teach the model a coin flip)."""
    seen: dict[str, QAItem] = {}
    kept, fates = [], []
    for it in items:
        key = normalize_question(it.question)
        if key in seen:
            first = seen[key]
            same = "same answer" if first.answer.strip() == it.answer.strip() else "another answer"
            fates.append(Fate(it.unit, "duplicate", f"duplicate_question: same question as {first.unit} ({same})",
                              doc_id=it.id, stage="sft"))
            continue
        seen[key] = it
        kept.append(it)
    return kept, fates


def paraphrase_groups(questions: list[str], threshold: float) -> list[int]:
    """A group id per question: questions whose word sets are at least `threshold` similar (MinHash LSH,
    then checked) share a group, transitively. Groups decide splits, so no paraphrase straddles two."""
    parent = list(range(len(questions)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    index = NearDuplicateIndex(threshold=threshold, num_perm=128)
    keys: dict[str, int] = {}
    for i, q in enumerate(questions):
        sig = signature(q, shingle_size=1, toks=sorted(set(tokens(q))))
        match = index.check_and_add(str(i), sig)
        if match is not None:
            parent[find(i)] = find(int(match[0]))
        keys[str(i)] = i
    return [find(i) for i in range(len(questions))]


def token_length(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    out = tokenizer.apply_chat_template(messages, tokenize=True)
    ids = out["input_ids"] if hasattr(out, "keys") else out
    return len(ids)


def sft_suite(max_length: int) -> list[Any]:
    """Roles in order, non-empty turns, token length within max_length, one row per question."""
    import great_expectations as gx

    def named(exp: Any, check: str) -> Any:
        exp.meta = {"check": check}
        return exp

    return [
        named(gx.expectations.ExpectColumnValuesToNotBeNull(column="roles"), "roles_present"),
        named(gx.expectations.ExpectColumnValuesToMatchRegex(column="roles", regex=ROLE_PATTERN), "role_order"),
        named(gx.expectations.ExpectColumnValuesToBeBetween(column="min_turn_chars", min_value=1), "empty_turn"),
        named(gx.expectations.ExpectColumnValuesToBeBetween(column="n_tokens", min_value=1, max_value=max_length),
              "too_long"),
        named(gx.expectations.ExpectColumnValuesToBeUnique(column="question_key"), "duplicate_question"),
        named(gx.expectations.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)), "split"),
        named(gx.expectations.ExpectTableRowCountToBeBetween(min_value=1), "min_rows"),
    ]


def validate_examples(ws: Workspace, rows: list[dict[str, Any]], max_length: int, run_id: str,
                      ) -> tuple[list[dict[str, Any]], dict[int, list[str]], list[str]]:
    """Run the SFT suite; returns (rows, failing checks per row index, table-level failures)."""
    import pandas as pd

    df = pd.DataFrame([{"row": i, "roles": ",".join(m["role"] for m in r["messages"]),
                        "min_turn_chars": min((len((m.get("content") or "").strip()) for m in r["messages"]), default=0),
                        "n_tokens": r["n_tokens"], "question_key": r["question_key"], "split": r["split"]}
                       for i, r in enumerate(rows)], columns=["row", "roles", "min_turn_chars", "n_tokens",
                                                               "question_key", "split"])
    outcomes, _ = run_suite(df, sft_suite(max_length), ws, run_id, data_docs=False, name="ragtune_sft")
    failing: dict[int, list[str]] = {}
    table: list[str] = []
    for res, bad_rows in outcomes:
        check = (getattr(res.expectation_config, "meta", None) or {}).get("check", "check")
        if res.success:
            continue
        if not bad_rows:
            table.append(check)
        for b in bad_rows:
            failing.setdefault(int(b["row"] if isinstance(b, dict) else b), []).append(check)
    return rows, failing, table


REASONS = {
    "role_order": "role_order: roles must be [system,] user, assistant[, user, assistant ...]",
    "roles_present": "role_order: no roles",
    "empty_turn": "empty_turn: a message has no content",
    "too_long": "too_long: {n} tokens > max_length {max}",
    "duplicate_question": "duplicate_question: another example has the same question",
    "split": "split: unknown split",
}


def build_examples(ws: Workspace, items: list[QAItem], cfg: SFTDataConfig, tokenizer: Any,
                   ) -> tuple[list[dict[str, Any]], str | None]:
    """Chat examples with split, token length and the retrieved context's doc ids."""
    index_version = None
    contexts: list[list[dict[str, Any]]] = [[] for _ in items]
    need = [i for i, it in enumerate(items) if it.messages is None and it.context is None]
    if cfg.rag_context and need:
        found, index_version = retrieve_contexts(ws, [items[i].question for i in need], cfg)
        for i, hits in zip(need, found, strict=True):
            contexts[i] = hits
    groups = paraphrase_groups([it.question for it in items], cfg.paraphrase_threshold)
    rep = {}
    for it, g in zip(items, groups, strict=True):  # a group's split comes from its smallest normalised question
        rep[g] = min(rep.get(g, normalize_question(it.question)), normalize_question(it.question))
    rows = []
    for it, g, hits in zip(items, groups, contexts, strict=True):
        if it.messages is not None:
            messages = it.messages
        else:
            ctx = it.context if it.context else (format_context(hits, cfg.context_chars) if cfg.rag_context else None)
            messages = build_messages(it.question, it.answer, ctx, cfg.system_prompt)
        rows.append({
            "id": it.id, "unit": it.unit, "question": it.question, "answer": it.answer, "doc_id": it.doc_id,
            "messages": messages, "context_doc_ids": [h["doc_id"] for h in hits],
            "given_messages": it.messages is not None,  # a conversation given as is: not rebuilt at evaluation
            "source": it.source, **({"request_id": it.request_id} if it.request_id else {}),
            "question_key": normalize_question(it.question), "group": rep[g],
            "split": it.split or assign_split(rep[g], cfg.validation_fraction, cfg.test_fraction, cfg.split_salt),
            "n_tokens": token_length(tokenizer, messages) if all(m.get("content") for m in messages) else 0,
        })
    return rows, index_version


@dataclass
class SFTResult:
    version: str
    path: str
    counts: dict[str, int]
    splits: dict[str, int]
    index_version: str | None
    created: bool


def build_sft_dataset(ws: Workspace, cfg: SFTDataConfig, tokenizer: Any, tokenizer_id: str, run_id: str) -> SFTResult:
    """Parse, dedupe, build, validate and publish `datasets/<cfg.dataset>/<version>/` (train/validation/test
    JSONL, manifest.jsonl with one fate per unit, stats.json, meta.json), then move `latest`."""
    sources = qa_sources(ws, cfg)
    paths = list(sources.files)
    items, fates = read_qa_files(paths)
    human = bool(items)
    if sources.question_set is not None:
        more, more_fates = generated_items(sources.question_set, human)
        items, fates = items + more, fates + more_fates
    feedback = ws.root / "feedback" / "accepted.jsonl"  # written by tasks.serve.feedback (the review)
    if cfg.include_feedback and feedback.is_file():  # read last: the user's files win on duplicate questions
        more, more_fates = read_qa_files([feedback], source="feedback")
        items, fates, paths = items + more, fates + more_fates, [*paths, feedback]
    provenance_of = {it.unit: {"source": it.source, **({"request_id": it.request_id} if it.request_id else {}),
                               **(it.origin or {})} for it in items}
    items, dup_fates = drop_duplicates(items)
    fates += dup_fates
    rows, index_version = build_examples(ws, items, cfg, tokenizer)
    rows, held = hold_out_human_test_documents(rows)
    fates += held
    rows, failing, table = validate_examples(ws, rows, cfg.max_length, run_id)
    if table:
        raise ValueError(f"SFT dataset failed table checks: {', '.join(table)}")
    accepted = []
    for i, r in enumerate(rows):
        if i in failing:
            reasons = "; ".join(REASONS.get(c, c).format(n=r["n_tokens"], max=cfg.max_length) for c in sorted(set(failing[i])))
            fates.append(Fate(r["unit"], "quarantined", reasons, doc_id=r["id"], stage="sft-validate"))
        else:
            accepted.append(r)
            fates.append(Fate(r["unit"], "accepted", "ok", doc_id=r["id"], stage="sft"))
    if not accepted:
        raise ValueError("no usable SFT examples (every Q/A line was rejected; see the manifest reasons)")
    by_unit = sorted(({**f.manifest_line(), **provenance_of.get(f.unit, {
        "source": "feedback" if f.unit.startswith("feedback/") else "qa"})} for f in fates), key=lambda x: x["unit"])
    counts = count_fates(by_unit)
    blob = json.dumps({"rows": [{k: r[k] for k in ("id", "messages", "split")} for r in accepted],
                       "manifest": by_unit, "tokenizer": tokenizer_id, "max_length": cfg.max_length},
                      sort_keys=True).encode()
    version = hashlib.sha256(blob).hexdigest()[:16]
    base = ws.dataset_dir(cfg.dataset)
    final = base / version
    created = False
    splits = {s: sum(r["split"] == s for r in accepted) for s in SPLITS}
    if not (final / "manifest.jsonl").exists():
        staging = base / f".staging-{run_id}"
        for s in SPLITS:
            write_jsonl(staging / f"{s}.jsonl", [r for r in accepted if r["split"] == s])
        write_jsonl(staging / "manifest.jsonl", by_unit)
        atomic_write_json(staging / "stats.json", {"counts": counts, "splits": splits,
                                                   "max_tokens": max(r["n_tokens"] for r in accepted)})
        atomic_write_json(staging / "meta.json", {
            "dataset": cfg.dataset, "version": version, "run_id": run_id, "created_at": utc_now(),
            "config": cfg.model_dump(mode="json"), "tokenizer": tokenizer_id, "index_version": index_version,
            "qa_files": [str(p) for p in paths], "qa_origin": sources.origin,
            "question_set": sources.question_set.name if sources.question_set else None, **provenance()})
        created = publish_dir(staging, final)
    if read_pointer(base / "latest") != version:
        write_pointer(base / "latest", version)
    log.info("SFT dataset %s: %s, splits %s", version, counts, splits)
    return SFTResult(version, str(final), counts, splits, index_version, created)


class NoQADataError(FileNotFoundError):
    """Neither Q/A files nor generated pairs for this corpus: the message says what to run."""


@dataclass
class QASources:
    files: list[Path]  # human-written Q/A files (the test set of record when present)
    origin: str  # how the files were chosen: "qa_paths", "bundled sample", or "none"
    question_set: Path | None  # the generated question set folder, or None


def corpus_dataset(ws: Workspace, cfg: SFTDataConfig) -> tuple[str, str | None]:
    """(dataset, version) of the documents the SFT data is about: the served index's, else the latest docs."""
    index = served(ws, cfg.index_name)
    if index is not None and index.meta.get("dataset_version"):
        return index.config.dataset, str(index.meta["dataset_version"])
    return "docs", latest_version(ws, "docs")


def corpus_is_sample(ws: Workspace, cfg: SFTDataConfig) -> bool:
    """Whether every source of the corpus is the bundled sample (its own Q/A set then applies: the demo)."""
    dataset, version = corpus_dataset(ws, cfg)
    if not version:
        return False
    meta = read_json(ws.dataset_dir(dataset) / version / "meta.json", default={}) or {}
    sources = ((meta.get("config") or {}).get("collect") or {}).get("sources") or []
    roots = [resolve_local_source(s) for s in sources]
    return bool(roots) and all(r is not None and r.resolve().is_relative_to(SAMPLE_DIR.resolve()) for r in roots)


def qa_sources(ws: Workspace, cfg: SFTDataConfig) -> QASources:
    """What the SFT dataset is built from: the configured Q/A files (else the bundled sample's, only when the
    corpus is the bundled sample) and the generated question set (`cfg.questions`). Never the sample's questions
    for a user's corpus: with nothing to train on, a `NoQADataError` says what to run."""
    files: list[Path] = []
    for p in cfg.qa_paths:
        path = resolve_local_source(p)
        if path is None or not path.is_file():
            raise FileNotFoundError(f"Q/A file not found: {p}")
        files.append(path)
    origin = "qa_paths" if files else "none"
    if not files and corpus_is_sample(ws, cfg):
        files, origin = [SAMPLE_DIR / "qa.jsonl"], "bundled sample"
    folder = latest_question_set(ws, version=cfg.questions_version) if cfg.questions != "none" else None
    if cfg.questions == "generated" and folder is None:
        raise NoQADataError("train.data.questions is `generated` but no question set exists: run "
                            "`ragtune questions generate` first")
    if not files and folder is None:
        raise NoQADataError("no Q/A data for this corpus: run `ragtune questions generate` (pairs from your own "
                            "documents), or set train.data.qa_paths to your Q/A files (--qa FILE)")
    return QASources(files, origin, folder)


def generated_items(folder: Path, human: bool) -> tuple[list[QAItem], list[Fate]]:
    """The accepted pairs of a question set as Q/A items with their document split. With human Q/A files the
    human test split is the test set of record: generated test pairs train instead."""
    items = []
    for p in load_pairs(folder):
        split = "train" if human and p["split"] == "test" else p["split"]
        items.append(QAItem(f"questions/{folder.name}#{p['id']}", p["id"], p["question"], p["answer"], p["doc_id"],
                            source="generated", split=split,
                            origin={"question_set": folder.name, "chunk_id": p.get("chunk_id"), "kind": p["kind"]}))
    return items, []


def hold_out_human_test_documents(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Fate]]:
    """Generated pairs about a document that a human test question asks about leave the dataset (filtered, with
    the reason): evaluation on the human test set must not see its documents in training."""
    test_docs = {r["doc_id"] for r in rows if r["source"] != "generated" and r["split"] == "test" and r["doc_id"]}
    kept, fates = [], []
    for r in rows:
        if r["source"] == "generated" and r["doc_id"] in test_docs:
            fates.append(Fate(r["unit"], "filtered", "held_out: its document is in the human Q/A test split",
                              doc_id=r["id"], stage="sft"))
        else:
            kept.append(r)
    return kept, fates


def load_split(path: str | Path, split: str) -> list[dict[str, Any]]:
    return read_jsonl(Path(path) / f"{split}.jsonl")
