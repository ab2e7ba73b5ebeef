"""Guardrails, one path for the server, `ragtune ask` and the answer cache: input limits, a refusal of hateful or
abusive requests, PII redaction before anything is written, prompt-injection flags on the question and the
retrieved passages, the safety blocklist on answers, and the "not found in the documents" threshold on retrieval
support (calibrated by `ragtune calibrate`). Every decision is a small dict {check, action, detail} that the
response and the request log carry."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any

from tasks.core.config import resolve_local_source
from tasks.core.workspace import Workspace, read_json
from tasks.evaluate.safety import load_blocklist
from tasks.ingest.pii import redact_pii
from tasks.serve.config import BLOCKED_ANSWER, GuardrailConfig

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
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class GuardrailError(ValueError):
    """A request refused by an input guardrail; `status` is the HTTP code, `check` the rule's name."""

    def __init__(self, check: str, message: str, status: int = 400, retry_after: int | None = None,
                 logged: bool = True) -> None:
        super().__init__(message)
        self.check = check
        self.status = status
        self.retry_after = retry_after  # seconds, for a 429 or 503: when the client may try again
        self.logged = logged  # False: counted in the metrics only (the repeats of a flood would fill the disk)


def decision(check: str, action: str, detail: str) -> dict[str, str]:
    return {"check": check, "action": action, "detail": detail}


def check_question(question: Any, cfg: GuardrailConfig) -> str:
    """The question, stripped; `GuardrailError` when it is missing, not text, empty or too long."""
    if not isinstance(question, str):
        raise GuardrailError("input_type", f"question must be a string, not {type(question).__name__}")
    if len(question) > cfg.max_question_chars:  # the question as sent, as the schema's maxLength counts it
        raise GuardrailError("input_too_long", f"the question has {len(question)} characters; the limit is "
                             f"{cfg.max_question_chars}", status=413)
    text = unicodedata.normalize("NFC", question).strip()
    if not text:
        raise GuardrailError("input_empty", "the question is empty")
    if _CONTROL.search(text) or "\ufffd" in text:
        raise GuardrailError("input_not_text", "the question holds control characters or undecodable bytes: "
                             "send plain UTF-8 text")
    return text


def redact(text: str | None, cfg: GuardrailConfig) -> tuple[str | None, dict[str, int]]:
    """The text with personal data and secrets replaced (the ingest patterns), and a count per kind."""
    if not text or not cfg.redact_pii:
        return text, {}

    return redact_pii(text)


def find_injection(text: str) -> list[str]:
    """Names of the injection patterns found in `text`."""
    return [name for name, rx in _INJECTION.items() if rx.search(text)]


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


@lru_cache(maxsize=8)
def _blocklist(path: str, mtime: float | None) -> Any:
    return load_blocklist(path)


def _list_file(path: str) -> Path:
    resolved = resolve_local_source(path)
    if resolved is None or not resolved.is_file():
        raise FileNotFoundError(f"guardrail list not found: {path}")
    return resolved


def blocked_terms(text: str, cfg: GuardrailConfig) -> list[str]:
    """Blocklist entries found in the text (the check evaluation counts as unsafe); an edited list applies at once."""
    path = _list_file(cfg.safety_blocklist)
    return _blocklist(str(path), _mtime(path)).matches(text)


@lru_cache(maxsize=8)
def _abuse_patterns(path: str, mtime: float | None) -> list[re.Pattern[str]]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [re.compile(line.strip(), re.IGNORECASE) for line in lines if line.strip() and not line.startswith("#")]


def abusive_request(question: str, cfg: GuardrailConfig) -> str | None:
    """Why the question is refused as hateful or abusive (a blocklist term, or a request for insults, slurs or
    hate speech), or None."""
    terms = blocked_terms(question, cfg)
    if terms:
        return f"the question holds {len(terms)} term(s) of the safety blocklist"
    path = _list_file(cfg.abusive_requests)
    for rx in _abuse_patterns(str(path), _mtime(path)):
        if rx.search(" ".join(unicodedata.normalize("NFKC", question).split())):
            return "the question asks for hateful or abusive text (insults, slurs, hate speech)"
    return None


def screen_question(question: Any, cfg: GuardrailConfig) -> tuple[str, list[dict[str, str]]]:
    """The input checks every path applies: (the stripped question, the decisions to report), or `GuardrailError`
    for a question that is not text, empty, too long, abusive, or (with block_injection_questions) an injection."""
    text = check_question(question, cfg)
    if cfg.refuse_abusive_questions:
        reason = abusive_request(text, cfg)
        if reason:
            raise GuardrailError("input_abuse", f"refused: {reason}")
    decisions = []
    found = find_injection(text) if cfg.prompt_injection else []
    if found:
        if cfg.block_injection_questions:
            raise GuardrailError("prompt_injection", f"the question matches prompt-injection patterns: {', '.join(found)}")
        decisions.append(decision("prompt_injection", "flag", f"question: {', '.join(found)}"))
    return text, decisions


def screen_answer(answer: str, cfg: GuardrailConfig) -> dict[str, Any]:
    """The output check every path applies, to fresh and cached answers alike: {answer (withheld when a blocklist
    term is in it), blocked, decisions}."""
    terms = blocked_terms(answer or "", cfg)
    if not terms:
        return {"answer": answer, "blocked": False, "decisions": []}
    return {"answer": BLOCKED_ANSWER, "blocked": True,
            "decisions": [decision("blocklist", "withhold", f"{len(terms)} blocklist term(s) in the answer")]}


def calibration_path(ws: Workspace) -> Path:
    return ws.root / "serve" / "calibration.json"


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
