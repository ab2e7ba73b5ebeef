"""Feedback review: votes and corrections from the inbox become reviewed Q/A pairs, each record with one fate."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tasks.core.config import resolve_local_source
from tasks.core.workspace import Workspace, new_run_id, read_jsonl, utc_now, write_jsonl
from tasks.serve.config import FeedbackConfig
from tasks.serve.requestlog import FEEDBACK, find_request, read_records
from tasks.train.config import SFTDataConfig
from tasks.train.sft import (
    REASONS,
    QAItem,
    build_examples,
    normalize_question,
    qa_sources,
    read_qa_files,
    validate_examples,
)

STATUSES = ("pending", "accepted", "rejected", "duplicate", "quarantined")
LOCK_WAIT_S = 30.0  # a reviewer's command waits for a concurrent triage instead of failing at once
NO_CORRECTION = "no_correction: down-voted without a correction: nothing to learn"


def feedback_dir(ws: Workspace) -> Path:
    return ws.root / "feedback"


def review_path(ws: Workspace) -> Path:
    """`feedback/review.jsonl`: one item per feedback record, in inbox order."""
    return feedback_dir(ws) / "review.jsonl"


def accepted_path(ws: Workspace) -> Path:
    """`feedback/accepted.jsonl`: the accepted pairs as Q/A lines (regenerated from the review file)."""
    return feedback_dir(ws) / "accepted.jsonl"


def read_items(ws: Workspace) -> list[dict[str, Any]]:
    path = review_path(ws)
    return read_jsonl(path) if path.exists() else []


def _write(ws: Workspace, items: list[dict[str, Any]]) -> None:
    """Review file first, then the accepted pairs derived from it: a run killed in between leaves a stale
    accepted.jsonl that the next command regenerates (nothing is lost, nothing is counted twice)."""
    write_jsonl(review_path(ws), items)
    write_jsonl(accepted_path(ws), [qa_line(it) for it in items if it["status"] == "accepted"])


def qa_line(item: dict[str, Any]) -> dict[str, Any]:
    """An accepted item as a Q/A line with its provenance (what `build_sft_dataset` reads)."""
    return {"id": f"feedback-{item['request_id']}", "question": item["question"], "answer": item["answer"],
            "doc_id": (item["doc_ids"] or [None])[0], "doc_ids": item["doc_ids"], "source": "feedback",
            "request_id": item["request_id"], "feedback_id": item["feedback_id"], "accepted_at": item["reviewed_at"]}


def accepted_count(ws: Workspace) -> int:
    """Accepted feedback pairs (lines of accepted.jsonl): new Q/A lines for the retraining policy."""
    path = accepted_path(ws)
    return len(read_jsonl(path)) if path.exists() else 0


def _decide(item: dict[str, Any], status: str, reason: str, by: str) -> dict[str, Any]:
    return {**item, "status": status, "reason": reason, "reviewed_at": utc_now(), "reviewed_by": by}


def feedback_id(rec: dict[str, Any]) -> str:
    """The record's id; a hand-edited line without one gets a stable id from its content (so it is seen once)."""
    return str(rec.get("feedback_id") or "fb-" + hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:12])


def _replaced(item: dict[str, Any], by: str) -> dict[str, Any]:
    return _decide(item, "duplicate", f"replaced: a later vote of the same client ({by}) replaces it", "triage")


def _first_look(ws: Workspace, cfg: FeedbackConfig, rec: dict[str, Any], replaced_by: dict[str, str]) -> dict[str, Any]:
    """The item of one inbox record: decided at once (rejected, quarantined, replaced) or a `candidate` pair."""
    fid = feedback_id(rec)
    correction = (rec.get("correction") or "").strip() if isinstance(rec.get("correction"), str) else ""
    item = {"feedback_id": fid, "request_id": rec.get("request_id"), "rating": rec.get("rating"),
            "at": rec.get("at"), "question": None, "answer": None, "doc_ids": [], "comment": rec.get("comment"),
            "status": "candidate", "reason": "", "reviewed_at": None, "reviewed_by": None, "note": None,
            "client": rec.get("client")}
    if rec.get("refused"):  # the server answered 4xx: recorded so that it has a fate, never a training pair
        return _decide(item, "quarantined", f"refused_at_api: {rec['refused']}", "triage")
    if fid in replaced_by:
        return _replaced(item, replaced_by[fid])
    if not rec.get("feedback_id") or not isinstance(rec.get("request_id"), str) or item["rating"] not in ("up", "down"):
        return _decide(item, "quarantined", "malformed: a feedback record needs feedback_id, request_id and "
                       "rating up|down (a hand-edited inbox line?)", "triage")
    req = find_request(ws, rec["request_id"])
    if req is None:
        return _decide(item, "quarantined", f"unknown_request: request {rec['request_id']} is not in the request "
                       "log", "triage")
    doc_ids = [s.get("doc_id") for s in req.get("sources") or [] if isinstance(s, dict) and s.get("doc_id")]
    item.update(question=req.get("question") or "", doc_ids=list(dict.fromkeys(doc_ids)))
    if item["rating"] == "down":
        if not correction:
            return _decide(item, "rejected", NO_CORRECTION, "triage")
        return {**item, "answer": correction}
    item["answer"] = req.get("answer")
    # an up-vote on a refusal would teach the model to refuse (or to repeat a withheld answer); blocked and
    # not_found first: their logged answer may be the refusal text rather than null
    if req.get("blocked"):
        return _decide(item, "rejected", "blocked: up-voted an answer the safety check withheld", "triage")
    if req.get("not_found"):
        return _decide(item, "rejected", "not_found: up-voted a 'not found in the documents' refusal", "triage")
    if req.get("answer") is None:
        return _decide(item, "rejected", "refused: up-voted a refused request (no answer was given)", "triage")
    if not cfg.use_upvoted_answers:
        return _decide(item, "rejected", "upvotes_off: up-voted answers are not used "
                       "(feedback.use_upvoted_answers is off)", "triage")
    return item


def _same_request(item: dict[str, Any], first: dict[str, Any]) -> dict[str, Any]:
    vote = "" if first["rating"] == item["rating"] else f", a conflicting {item['rating']} vote"
    return _decide(item, "duplicate", f"duplicate_request: request {item['request_id']} already has feedback "
                   f"{first['feedback_id']} ({first['status']}; the first vote wins{vote})", "triage")


class _WordCounter:
    """Stands in for a tokenizer when none is given: whitespace words, a lower bound of base-model tokens."""

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool = True) -> list[int]:
        return [0] * sum(len(str(m.get("content") or "").split()) + 2 for m in messages)


def sft_check(ws: Workspace, items: list[dict[str, Any]], data: SFTDataConfig, tokenizer: Any,
              max_length: int) -> list[str | None]:
    """The SFT suite's reason per candidate (None: passes), on the closed-book example: the retrieved context is
    added, and the length checked again, when the SFT dataset is built."""
    if not items:
        return []
    qa = [QAItem(f"feedback#{it['feedback_id']}", it["feedback_id"], it["question"], it["answer"]) for it in items]
    rows, _ = build_examples(ws, qa, data.model_copy(update={"rag_context": False}), tokenizer)
    _, failing, _ = validate_examples(ws, rows, max_length, f"feedback-{new_run_id()}")
    out: list[str | None] = []
    for i, r in enumerate(rows):
        # duplicates are judged by triage (against the Q/A files and earlier feedback), not within this batch
        checks = set(failing.get(i, [])) - {"duplicate_question", "split"}
        if "empty_turn" in checks:
            checks.discard("too_long")  # an empty turn has 0 tokens: "too long" would only confuse
        out.append("; ".join(REASONS.get(c, c).format(n=r["n_tokens"], max=max_length) for c in sorted(checks))
                   or None)
    return out


def _qa_questions(ws: Workspace, data: SFTDataConfig) -> dict[str, str]:
    """Normalised question -> unit, for every question of the Q/A files the SFT dataset reads (those that exist;
    the bundled sample's on the bundled sample corpus)."""
    try:
        paths = qa_sources(ws, data).files
    except FileNotFoundError:
        paths = [p for p in (resolve_local_source(s) for s in data.qa_paths) if p is not None and p.is_file()]
    items, _ = read_qa_files(paths)
    return {normalize_question(it.question): it.unit for it in reversed(items)}  # reversed: the first unit wins


def triage(ws: Workspace, cfg: FeedbackConfig | None = None, data: SFTDataConfig | None = None,
           tokenizer: Any = None, max_length: int | None = None,
           tokenizer_factory: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Turn inbox records not yet in the review file into items. A vote the server marked as replacing an earlier
    one of the same client takes the earlier one's place while that is still pending; otherwise, per request the
    first usable vote wins: a later record for a request that already has a pending or accepted pair is a
    duplicate (a reviewer's decision is never reopened by a later vote). `tokenizer_factory` is called only when there are candidates to measure;
    with neither it nor `tokenizer`, lengths are counted in words. Returns {new, counts}."""
    cfg = cfg or FeedbackConfig()
    data = data or SFTDataConfig()
    with ws.lock("feedback", timeout_s=LOCK_WAIT_S):
        items = read_items(ws)
        known = {it["feedback_id"] for it in items}
        inbox = sorted(read_records(ws, FEEDBACK), key=lambda r: str(r.get("at")))  # stable: inbox order kept
        # the server names the vote a new one replaces (same request, same client): a pending pair steps aside
        replaced_by = {str(r["replaces"]): feedback_id(r) for r in inbox if r.get("replaces")}
        for i, it in enumerate(items):
            if it["status"] == "pending" and it["feedback_id"] in replaced_by:
                items[i] = _replaced(it, replaced_by[it["feedback_id"]])
        new = []
        for rec in inbox:
            if feedback_id(rec) not in known:
                known.add(feedback_id(rec))
                new.append(_first_look(ws, cfg, rec, replaced_by))
        live = [it for it in items if it["status"] in ("pending", "accepted")]
        by_request = {it["request_id"]: it for it in live}
        by_question = {**_qa_questions(ws, data), **{normalize_question(it["question"]): f"feedback {it['feedback_id']}"
                                                 f" ({it['status']})" for it in live}}
        candidates = []
        for i, it in enumerate(new):
            if it["status"] != "candidate":
                continue
            first = by_request.get(it["request_id"])
            if first is not None:
                new[i] = _same_request(it, first)
            elif normalize_question(it["question"]) in by_question:
                new[i] = _decide(it, "duplicate", "duplicate_question: same question as "
                                 f"{by_question[normalize_question(it['question'])]}", "triage")
            else:
                candidates.append(i)
        if candidates and tokenizer is None:
            tokenizer = tokenizer_factory() if tokenizer_factory else _WordCounter()
        reasons = sft_check(ws, [new[i] for i in candidates], data, tokenizer, max_length or data.max_length)
        for i, reason in zip(candidates, reasons, strict=True):
            it, key = new[i], normalize_question(new[i]["question"])
            if reason:
                new[i] = _decide(it, "quarantined", reason, "triage")
            elif it["request_id"] in by_request:  # a twin earlier in this same batch
                new[i] = _same_request(it, by_request[it["request_id"]])
            elif key in by_question:
                new[i] = _decide(it, "duplicate", f"duplicate_question: same question as {by_question[key]}", "triage")
            else:
                new[i] = (_decide(it, "accepted", "auto_accept: accepted without review (feedback.auto_accept)",
                                  "auto_accept") if cfg.auto_accept else {**it, "status": "pending"})
                by_request[it["request_id"]] = new[i]
                by_question[key] = f"feedback {it['feedback_id']} ({new[i]['status']})"
        items += new
        _write(ws, items)
    return {"new": new, "counts": counts(items)}


def counts(items: Iterable[dict[str, Any]]) -> dict[str, int]:
    out = dict.fromkeys(STATUSES, 0)
    for it in items:
        out[it["status"]] = out.get(it["status"], 0) + 1
    return out


def list_items(ws: Workspace, status: str | None = None) -> list[dict[str, Any]]:
    """Review items, in inbox order, optionally of one status."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
    return [it for it in read_items(ws) if status is None or it["status"] == status]


def _pick(items: list[dict[str, Any]], ids: list[str]) -> list[dict[str, Any]]:
    by_id = {it["feedback_id"]: it for it in items}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(f"no feedback item {missing[0]!r} (see ragtune feedback list)")
    return [by_id[i] for i in dict.fromkeys(ids)]


def accept(ws: Workspace, ids: list[str] | None = None, all_pending: bool = False,
           note: str | None = None) -> list[dict[str, Any]]:
    """Accept pending items (or undo a reviewer's rejection); accepting an accepted item changes nothing.
    Returns the items now accepted by this call."""
    if not ids and not all_pending:
        raise ValueError("name the items to accept, or use --all-pending")
    with ws.lock("feedback", timeout_s=LOCK_WAIT_S):
        items = read_items(ws)
        picked = _pick(items, ids or []) + ([it for it in items if it["status"] == "pending"] if all_pending else [])
        done = []
        for it in picked:
            if it["status"] == "accepted":
                continue
            if it["status"] != "pending" and not (it["status"] == "rejected" and it["reviewed_by"] == "reviewer"):
                raise ValueError(f"feedback item {it['feedback_id']} is {it['status']} ({it['reason']}); only "
                                 "pending items (or ones a reviewer rejected) can be accepted")
            twin = next((o for o in items if o["request_id"] == it["request_id"] and o["status"] == "accepted"
                         and o is not it), None)
            if twin is not None:  # one pair per request: the pair's id is feedback-<request id>
                raise ValueError(f"request {it['request_id']} already has an accepted pair ({twin['feedback_id']})")
            it.update(_decide(it, "accepted", "accepted by a reviewer", "reviewer"), note=note)
            done.append(it)
        _write(ws, items)
    return done


def reject(ws: Workspace, ids: list[str], reason: str) -> list[dict[str, Any]]:
    """Reject pending or accepted items (an accepted pair leaves accepted.jsonl) with the reviewer's reason."""
    if not ids:
        raise ValueError("name the items to reject")
    if not reason or not reason.strip():
        raise ValueError("a rejection needs a reason (--reason)")
    with ws.lock("feedback", timeout_s=LOCK_WAIT_S):
        items = read_items(ws)
        picked = _pick(items, ids)
        for it in picked:
            if it["status"] not in ("pending", "accepted", "rejected"):
                raise ValueError(f"feedback item {it['feedback_id']} is {it['status']} ({it['reason']}); only "
                                 "pending or accepted items can be rejected")
            if it["status"] == "rejected" and it["reviewed_by"] != "reviewer":
                raise ValueError(f"feedback item {it['feedback_id']} was rejected by triage ({it['reason']})")
            it.update(_decide(it, "rejected", f"reviewer: {reason.strip()}", "reviewer"))
        _write(ws, items)
    return picked
