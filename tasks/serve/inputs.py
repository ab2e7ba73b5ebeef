"""Request bodies, read as an attacker would send them: size, arrival time and nesting depth are checked before
the JSON is parsed, then numbers, lone surrogates and every field, so that any bad body gets a 4xx with a
one-line reason (never a 500, never a value that breaks a later step)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import anyio
from starlette.requests import ClientDisconnect

from tasks.serve.config import GuardrailConfig
from tasks.serve.guardrails import GuardrailError

MAX_FEEDBACK_TEXT = 4000  # characters of a correction or a comment
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# C0 and C1 controls but tab and newline, and the bidirectional overrides that reorder what a terminal shows
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_FILTER_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")  # payload field names the index can hold
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # used with fullmatch: `$` would let a trailing newline in
MAX_FILTER_VALUE = 500  # characters of one filter value


def json_depth(text: str) -> int:
    """How deep objects and lists nest in a JSON text, counted without parsing it (strings are skipped), so that
    a body nested thousands deep is refused before the parser recurses into it."""
    depth = deepest = 0
    for ch in _NOT_BRACKET.sub("", _STRING.sub('""', text)):
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _parse(text: str, cfg: GuardrailConfig) -> Any:
    def number(raw: str) -> int:
        if len(raw.lstrip("-")) > cfg.max_number_digits:
            raise GuardrailError("input_number", f"a number has {len(raw.lstrip('-'))} digits; the limit is "
                                 f"{cfg.max_number_digits}")
        return int(raw)

    def real(raw: str) -> float:
        value = float(raw)
        if not math.isfinite(value) or len(raw) > 64:
            raise GuardrailError("input_number", f"the number {raw[:20]}… is out of range")
        return value

    def constant(name: str) -> Any:
        raise GuardrailError("input_json", f"invalid JSON: {name} is not a JSON number")

    try:
        return json.loads(text, parse_int=number, parse_float=real, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise GuardrailError("input_json", f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def _reject_surrogates(value: Any) -> None:
    """A lone surrogate (`"\\ud800"`) parses into a str that cannot be written as UTF-8 anywhere later."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise GuardrailError("input_not_text", "the body holds a lone UTF-16 surrogate (\\ud800-\\udfff): send "
                                 "plain UTF-8 text")
    elif isinstance(value, dict):
        for k, v in value.items():
            _reject_surrogates(k)
            _reject_surrogates(v)
    elif isinstance(value, list):
        for v in value:
            _reject_surrogates(v)


async def read_body(request: Any, cfg: GuardrailConfig, timeout_s: float) -> dict[str, Any]:
    """The JSON object of a request body; `GuardrailError` (400, 408 or 413) with the reason otherwise."""
    limit = cfg.max_body_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise GuardrailError("input_too_large", f"the body has {int(length)} bytes; the limit is {limit}", 413)
    raw = bytearray()
    with anyio.move_on_after(timeout_s) as scope:
        try:
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > limit:
                    raise GuardrailError("input_too_large", f"the body exceeds {limit} bytes", 413)
        except ClientDisconnect:  # the client's doing, not the server's: a 4xx in the log, never a 500
            raise GuardrailError("input_incomplete", "the client closed the connection before the body ended") from None
    if scope.cancelled_caught:
        raise GuardrailError("input_timeout", f"the body did not arrive within {timeout_s:g} s", 408)
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GuardrailError("input_not_text", f"the body is not UTF-8 (byte {exc.start})") from None
    if json_depth(text) > cfg.max_json_depth:
        raise GuardrailError("input_depth", f"the body nests deeper than {cfg.max_json_depth} levels")
    body = _parse(text, cfg)
    if not isinstance(body, dict):
        raise GuardrailError("input_json", "the body must be a JSON object")
    _reject_surrogates(body)
    return body


def ask_arguments(body: dict[str, Any], cfg: GuardrailConfig) -> tuple[int | None, dict[str, Any] | None]:
    """(k, filters) of an ask body; unknown fields, a k outside 1-20 and odd filters are refused."""
    unknown = sorted(set(body) - {"question", "k", "filters"})
    if unknown:
        raise GuardrailError("input_fields", f"unknown fields {unknown[:5]}: send question, k, filters")
    k = body.get("k")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 20):
        raise GuardrailError("input_k", "k must be an integer from 1 to 20")
    return k, filters_of(body.get("filters"), cfg)


def filters_of(filters: Any, cfg: GuardrailConfig) -> dict[str, Any] | None:
    if filters is None:
        return None
    if not isinstance(filters, dict) or not all(isinstance(v, (str, int, bool)) for v in filters.values()):
        raise GuardrailError("input_filters", "filters must be an object of field: value (string, integer or bool)")
    if len(filters) > cfg.max_filters:
        raise GuardrailError("input_filters", f"{len(filters)} filters; the limit is {cfg.max_filters}")
    for key, value in filters.items():
        if not _FILTER_KEY.fullmatch(key):
            raise GuardrailError("input_filters", f"filter field {key[:40]!r} is not a field name (letters, digits, "
                                 "_ . -, starting with a letter or _)")
        if isinstance(value, str) and (not value.strip() or len(value) > MAX_FILTER_VALUE
                                       or _UNPRINTABLE.search(value)):
            raise GuardrailError("input_filters", f"filter {key!r} needs a printable value of 1 to "
                                 f"{MAX_FILTER_VALUE} characters")
    return filters or None


def clean_text(text: str) -> str:
    """User text with control characters removed (tab and newline kept), so that nothing read later from a log
    or a review file can drive a terminal."""
    return _UNPRINTABLE.sub("", text)


def feedback_fields(body: dict[str, Any]) -> dict[str, Any]:
    """{request_id, rating, correction?, comment?} of a feedback body, texts cleaned of control characters."""
    unknown = sorted(set(body) - {"request_id", "rating", "correction", "comment"})
    if unknown:
        raise GuardrailError("input_fields", f"unknown fields {unknown[:5]}: send request_id, rating, correction, "
                             "comment")
    rid = body.get("request_id")
    if not isinstance(rid, str) or not rid.strip():
        raise GuardrailError("input_request_id", "request_id is required (the id /v1/ask returned)")
    if not _REQUEST_ID.fullmatch(rid):  # exactly as returned: the schema's pattern, no padding accepted
        raise GuardrailError("input_request_id", "request_id is not an id /v1/ask returns")
    if body.get("rating") not in ("up", "down"):
        raise GuardrailError("input_rating", "rating must be 'up' or 'down'")
    out = {"request_id": rid, "rating": body["rating"]}
    for name in ("correction", "comment"):
        v = body.get(name)
        if v is None:
            continue
        if not isinstance(v, str):
            raise GuardrailError(f"input_{name}", f"{name} must be a string")
        if len(v) > MAX_FEEDBACK_TEXT:
            raise GuardrailError(f"input_{name}", f"{name} has {len(v)} characters; the limit is {MAX_FEEDBACK_TEXT}",
                                 413)
        out[name] = clean_text(v).strip() or None
    return out
