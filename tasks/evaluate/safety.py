"""Safety check on generated answers: a blocklist of slurs and hateful phrases (a data file), matched on whole
words after Unicode normalisation, so that evaluations can count unsafe answers and the gate can refuse a
model that produces more of them."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from tasks.core.workspace import PROJECT_ROOT

DEFAULT_BLOCKLIST = "data/safety/blocklist.txt"
# scripts without spaces between words, and Korean (particles attach to the word): entries match as substrings
_NO_SPACES = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\u0e00-\u0e7f\uac00-\ud7af]")


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@dataclass(frozen=True)
class Blocklist:
    path: str
    sha256: str
    entries: tuple[str, ...]
    pattern: re.Pattern[str] | None

    def matches(self, text: str) -> list[str]:
        """The blocklist entries found in `text` (empty when it is clean)."""
        if self.pattern is None:
            return []
        return sorted({m.group(0) for m in self.pattern.finditer(_norm(text))})


def load_blocklist(path: str | Path = DEFAULT_BLOCKLIST) -> Blocklist:
    """Read a blocklist file (one entry per line, `#` comments); relative paths are tried from the working
    directory, then from the project."""
    p = Path(path).expanduser()
    if not p.is_absolute() and not p.exists():
        p = PROJECT_ROOT / p
    if not p.is_file():
        raise FileNotFoundError(f"safety blocklist not found: {path}")
    raw = p.read_bytes()
    entries = tuple(dict.fromkeys(_norm(line) for line in raw.decode("utf-8").splitlines()
                                  if line.strip() and not line.lstrip().startswith("#")))
    parts = []
    for e in sorted(entries, key=len, reverse=True):  # longest first: report the whole phrase
        body = r"\s+".join(re.escape(w) for w in e.split())
        parts.append(body if _NO_SPACES.search(e) else rf"(?<!\w){body}(?!\w)")
    pattern = re.compile("|".join(parts)) if parts else None
    return Blocklist(str(p), hashlib.sha256(raw).hexdigest(), entries, pattern)
