"""Patterns for personal data and secrets; redaction uses them and the validation suite checks them."""

from __future__ import annotations

import re

# Heuristics, tuned for precision: each pattern needs the shape of the thing (an @ and a domain, a
# leading + or a known national layout, four groups of digits, a known key prefix), so that dates,
# versions, prices and order numbers pass through untouched.
PII_PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "phone": (
        r"(?<![\w+])\+\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){1,4}(?![\w])"  # international
        r"|(?<!\w)\(\d{3}\)[ ]?\d{3}[-. ]\d{4}(?!\w)"  # (555) 010-0123
        r"|(?<![\w.-])\d{3}[-.]\d{3}[-.]\d{4}(?![\w.-])"  # 555-010-0123
        r"|(?<![\w-])0\d{1,2}-\d{3,4}-\d{4}(?![\w-])"  # Korean and other trunk-prefixed numbers
    ),
    "card": r"(?<![\w-])(?:\d{4}[ -]){3}\d{4}(?![\w-])|(?<!\w)\d{15,16}(?!\w)",
    "secret": (
        r"\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}\b"  # payment-provider style keys
        r"|\bsk-[A-Za-z0-9_-]{20,}\b"  # sk-... API keys
        r"|\bAKIA[0-9A-Z]{16}\b"  # AWS access key id
        r"|\bgh[pousr]_[A-Za-z0-9]{30,}\b"  # GitHub tokens
        r"|\bxox[abprs]-[A-Za-z0-9-]{10,}\b"  # Slack tokens
        r"|\bAIza[0-9A-Za-z_-]{35}\b"  # Google API keys
        r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JSON web tokens
        r"|(?i:\b(?:api[_-]?key|secret|token|password|passwd)\b\s*[:=]\s*)[^\s\[]{8,}"  # key = value
    ),
}
PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "secret": "[SECRET]"}
_COMPILED = {name: re.compile(p) for name, p in PII_PATTERNS.items()}
# secrets first: a key can contain digit runs that would otherwise be read as a card or a phone
_ORDER = ("secret", "email", "card", "phone")


def redact_pii(text: str) -> tuple[str, dict[str, int]]:
    """Replace personal data and secrets with placeholders; return the text and a count per kind."""
    counts: dict[str, int] = {}
    for name in _ORDER:
        text, n = _COMPILED[name].subn(PLACEHOLDERS[name], text)
        if n:
            counts[name] = n
    return text, counts


def find_pii(text: str) -> dict[str, int]:
    """Count matches per kind without changing the text."""
    return {name: n for name in _ORDER if (n := len(_COMPILED[name].findall(text)))}
