"""Patterns for personal data and secrets; redaction uses them and the validation suite checks them."""

from __future__ import annotations

import re

# Heuristics, tuned for precision: each pattern needs the shape of the thing (an @ and a domain, a
# leading + or a known national layout, four groups of digits, a known key prefix), so that dates,
# versions, prices and order numbers pass through untouched.
#
# Written for speed as well: each branch starts with a rare character (@, +, a digit, a key prefix) and
# checks what precedes it with a look-behind after that character, so the regex engine skips ordinary
# prose quickly. The validation suite runs these same patterns over every document.
PII_PATTERNS: dict[str, str] = {
    # the local part is checked by the look-behind; redaction widens the match to the whole address
    "email": r"@(?<=[A-Za-z0-9._%+-]@)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "phone": (
        r"\+(?<![\w+]\+)\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){1,4}(?!\w)"  # international
        r"|\((?<!\w\()\d{3}\)[ ]?\d{3}[-. ]\d{4}(?!\w)"  # (555) 010-0123
        r"|\d(?<![\w.-]\d)\d{2}[-.]\d{3}[-.]\d{4}(?![\w.-])"  # 555-010-0123
        r"|0(?<![\w-]0)\d{1,2}-\d{3,4}-\d{4}(?![\w-])"  # Korean and other trunk-prefixed numbers
    ),
    "card": r"\d(?<![\w-]\d)\d{3}[ -]\d{4}[ -]\d{4}[ -]\d{4}(?![\w-])|\d(?<!\w\d)\d{14,15}(?!\w)",
    "secret": (
        r"_(?<=[spr]k_)(?:live|test)_[A-Za-z0-9]{16,}"  # payment-provider style keys (sk_live_...)
        r"|-(?<=\bsk-)[A-Za-z0-9_-]{20,}"  # sk-... API keys
        r"|A(?:KIA[0-9A-Z]{16}|Iza[0-9A-Za-z_-]{35})"  # AWS access key id, Google API key
        r"|_(?<=\bgh[pousr]_)[A-Za-z0-9]{30,}"  # GitHub tokens
        r"|-(?<=\bxox[abprs]-)[A-Za-z0-9-]{10,}"  # Slack tokens
        r"|J(?<=\beyJ)[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JSON web tokens
        # key = value, key: value (api_key, apikey, secret, token, password, passwd)
        r"|[:=](?<=(?i:pi_key|pi-key|apikey|secret|[\W_]token|ssword|passwd)[:=])[ \t]*[^\s\[]{8,}"
        r"|[:=](?<=(?i:pi_key|pi-key|apikey|secret|[\W_]token|ssword|passwd)[ \t][:=])[ \t]*[^\s\[]{8,}"
    ),
}
_EMAIL_FULL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "secret": "[SECRET]"}
_COMPILED = {name: re.compile(p) for name, p in PII_PATTERNS.items()}
# secrets first: a key can contain digit runs that would otherwise be read as a card or a phone
_ORDER = ("secret", "email", "card", "phone")


def redact_pii(text: str) -> tuple[str, dict[str, int]]:
    """Replace personal data and secrets with placeholders; return the text and a count per kind."""
    counts: dict[str, int] = {}
    for name in _ORDER:
        pattern = _EMAIL_FULL if name == "email" else _COMPILED[name]
        if name == "email" and "@" not in text:
            continue
        if name == "secret":
            text, n = _redact_secrets(text)
        else:
            text, n = pattern.subn(PLACEHOLDERS[name], text)
        if n:
            counts[name] = n
    return text, counts


_KEY_PREFIX = re.compile(r"(?:[spr]k_|sk-|gh[pousr]_|xox[abprs]-|ey)$")


def _keep_key_name(m: re.Match[str]) -> str:
    """`api_key = abc...` becomes `api_key = [SECRET]`: the name of the setting is not the secret."""
    s = m.group(0)
    if s[:1] in ":=":
        return s[0] + " " + PLACEHOLDERS["secret"]
    return PLACEHOLDERS["secret"]


def _redact_secrets(text: str) -> tuple[str, int]:
    """Secrets whose match starts inside the key (after `sk_`, `ghp_`, `eyJ`...) are widened to the prefix."""
    out: list[str] = []
    last = n = 0
    for m in _COMPILED["secret"].finditer(text):
        start = m.start()
        if text[start] in "_-J":  # the pattern matched from inside the key: include its prefix
            p = _KEY_PREFIX.search(text, max(0, start - 4), start + (0 if text[start] == "J" else 1))
            start = p.start() if p else start
        out.append(text[last:start])
        out.append(_keep_key_name(m))
        last = m.end()
        n += 1
    out.append(text[last:])
    return "".join(out), n


def find_pii(text: str) -> dict[str, int]:
    """Count matches per kind without changing the text."""
    return {name: n for name in _ORDER if (n := len(_COMPILED[name].findall(text)))}
