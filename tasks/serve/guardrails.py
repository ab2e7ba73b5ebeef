"""Guardrails of the server: input limits, PII redaction before anything is written, prompt-injection flags on
the question and the retrieved passages, the safety blocklist on answers, and the "not found in the documents"
threshold on retrieval support, calibrated on the evaluation split. Every decision is a small dict
{check, action, detail} that the response and the request log carry."""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any

from tasks.core.config import resolve_local_source
from tasks.core.workspace import Workspace, atomic_write_json, read_json, read_jsonl, read_pointer, utc_now
from tasks.evaluate.safety import load_blocklist
from tasks.ingest.pii import redact_pii
from tasks.serve.config import GuardrailConfig
from tasks.serve.engine import Retriever, desired_state
from tasks.train import registry
from tasks.train.sft import load_split

DEFAULT_SUPPORT = 0.2  # used until `ragtune calibrate` has written serve/calibration.json

# Prompt-injection patterns, written against the families of attacks documented in OWASP's LLM01 (prompt
# injection) and the examples of Greshake et al. 2023 ("Not what you've signed up for"): instructions to ignore
# or override earlier ones, requests for the system prompt, role hijacking, and chat-template tokens smuggled
# into text. They flag; they never change the text (a false positive costs a label, not an answer).
INJECTION_PATTERNS: dict[str, str] = {
    "ignore_instructions": r"\b(?:ignore|disregard|forget|override|bypass)\b.{0,40}\b(?:previous|prior|above|earlier|"
                           r"preceding|all|any|your|the)\b.{0,20}\b(?:instructions?|prompts?|rules|directions|"
                           r"guidelines|context)\b",
    "reveal_prompt": r"\b(?:reveal|show|print|repeat|output|leak|tell me)\b.{0,30}\b(?:system|hidden|initial|"
                     r"original)\s+(?:prompt|instructions?|message)\b",
    "role_hijack": r"\b(?:you are now|from now on,? you (?:are|will)|pretend (?:to be|you are)|act as (?:an? )?"
                   r"(?:unrestricted|uncensored|jailbroken|evil|dan)\b|developer mode|jailbreak|do anything now)",
    "new_instructions": r"(?:^|\n)\s*(?:new|updated|real|actual) (?:instructions?|system prompt)\s*:",
    "template_tokens": r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id)\|>|\[/?INST\]|"
                       r"<</?SYS>>|^\s*###\s*(?:system|instruction)\s*:",
}
_INJECTION = {name: re.compile(p, re.IGNORECASE | re.MULTILINE | re.DOTALL) for name, p in INJECTION_PATTERNS.items()}
MAX_FEEDBACK_TEXT = 4000  # characters of a correction or a comment
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class GuardrailError(ValueError):
    """A request refused by an input guardrail; `status` is the HTTP code, `check` the rule's name."""

    def __init__(self, check: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.check = check
        self.status = status


def decision(check: str, action: str, detail: str) -> dict[str, str]:
    return {"check": check, "action": action, "detail": detail}


def check_question(question: Any, cfg: GuardrailConfig) -> str:
    """The question, stripped; `GuardrailError` when it is missing, not text, empty or too long."""
    if not isinstance(question, str):
        raise GuardrailError("input_type", f"question must be a string, not {type(question).__name__}")
    text = unicodedata.normalize("NFC", question).strip()
    if not text:
        raise GuardrailError("input_empty", "the question is empty")
    if _CONTROL.search(text) or "\ufffd" in text:
        raise GuardrailError("input_not_text", "the question holds control characters or undecodable bytes: "
                             "send plain UTF-8 text")
    if len(text) > cfg.max_question_chars:
        raise GuardrailError("input_too_long", f"the question has {len(text)} characters; the limit is "
                             f"{cfg.max_question_chars}", status=413)
    return text


async def read_body(request: Any, limit: int) -> dict[str, Any]:
    """The JSON object of a request body; `GuardrailError` (413 or 400) with the reason otherwise."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise GuardrailError("input_too_large", f"the body has {int(length)} bytes; the limit is {limit}", 413)
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise GuardrailError("input_too_large", f"the body exceeds {limit} bytes", 413)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GuardrailError("input_not_text", f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GuardrailError("input_json", f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(body, dict):
        raise GuardrailError("input_json", "the body must be a JSON object")
    return body


def ask_arguments(body: dict[str, Any]) -> tuple[int | None, dict[str, Any] | None]:
    unknown = sorted(set(body) - {"question", "k", "filters"})
    if unknown:
        raise GuardrailError("input_fields", f"unknown fields {unknown}: send question, k, filters")
    k = body.get("k")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 20):
        raise GuardrailError("input_k", "k must be an integer from 1 to 20")
    filters = body.get("filters")
    if filters is not None and (not isinstance(filters, dict) or not all(
            isinstance(v, (str, int, bool)) and isinstance(key, str) for key, v in filters.items())):
        raise GuardrailError("input_filters", "filters must be an object of field: value (string, integer or bool)")
    return k, filters or None


def feedback_fields(body: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(body) - {"request_id", "rating", "correction", "comment"})
    if unknown:
        raise GuardrailError("input_fields", f"unknown fields {unknown}: send request_id, rating, correction, comment")
    rid = body.get("request_id")
    if not isinstance(rid, str) or not rid.strip():
        raise GuardrailError("input_request_id", "request_id is required (the id /v1/ask returned)")
    if body.get("rating") not in ("up", "down"):
        raise GuardrailError("input_rating", "rating must be 'up' or 'down'")
    out = {"request_id": rid.strip(), "rating": body["rating"]}
    for name in ("correction", "comment"):
        v = body.get(name)
        if v is None:
            continue
        if not isinstance(v, str):
            raise GuardrailError(f"input_{name}", f"{name} must be a string")
        if len(v) > MAX_FEEDBACK_TEXT:
            raise GuardrailError(f"input_{name}", f"{name} has {len(v)} characters; the limit is {MAX_FEEDBACK_TEXT}", 413)
        out[name] = v.strip() or None
    return out


def redact(text: str | None, cfg: GuardrailConfig) -> tuple[str | None, dict[str, int]]:
    """The text with personal data and secrets replaced (the ingest patterns), and a count per kind."""
    if not text or not cfg.redact_pii:
        return text, {}

    return redact_pii(text)


def find_injection(text: str) -> list[str]:
    """Names of the injection patterns found in `text`."""
    return [name for name, rx in _INJECTION.items() if rx.search(text)]


@lru_cache(maxsize=4)
def _blocklist(path: str) -> Any:
    return load_blocklist(path)


def blocked_terms(answer: str, cfg: GuardrailConfig) -> list[str]:
    """Blocklist entries found in the answer (the check evaluation counts as unsafe)."""
    return _blocklist(cfg.safety_blocklist).matches(answer)


def calibration_path(ws: Workspace) -> Path:
    return ws.root / "serve" / "calibration.json"


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


@lru_cache(maxsize=8)
def _calibration(path: str, mtime: float | None) -> dict[str, Any] | None:
    """The calibration file, read once per version of it (every answer asks for the threshold)."""
    return read_json(Path(path), default=None) if mtime is not None else None


def support_threshold(ws: Workspace, cfg: GuardrailConfig) -> tuple[float, str]:
    """(threshold, where it comes from): the setting, the calibration file, or the default."""
    if cfg.min_support is not None:
        return cfg.min_support, "guardrails.min_support"
    cal = _calibration(str(calibration_path(ws)), _mtime(calibration_path(ws)))
    if cal and cal.get("threshold") is not None:
        return float(cal["threshold"]), f"calibrated on {cal.get('questions', '?')} questions"
    return DEFAULT_SUPPORT, "default (run `ragtune calibrate`)"


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
