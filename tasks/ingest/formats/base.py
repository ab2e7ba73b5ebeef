"""What every reader shares: the unit error with its fate, text decoding, and the converted-text record."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

_SNIFF_BYTES = 8192


class UnitError(Exception):
    """A unit that cannot become a record; `fate` says whether it is quarantined or filtered."""

    def __init__(self, reason: str, fate: str = "quarantined"):
        super().__init__(reason)
        self.reason = reason
        self.fate = fate


def humanize_stem(name: str) -> str:
    stem = PurePosixPath(name.split("#", 1)[0]).stem
    words = re.sub(r"[-_]+", " ", stem).strip()
    return words[:1].upper() + words[1:] if words else stem


def decode_text(data: bytes) -> tuple[str, str]:
    """Bytes to text: UTF-8 (with or without BOM), else the best charset that fits; binary is an error."""
    utf16 = _utf16(data)
    if utf16:
        try:
            return data.decode(utf16), utf16
        except UnicodeDecodeError:
            raise UnitError(f"decode: not valid {utf16.upper()} despite its byte order mark or NUL pattern") from None
    if b"\x00" in data[:_SNIFF_BYTES]:
        sample = data[:_SNIFF_BYTES]
        printable = sum(1 for b in sample if b >= 0x20 or b in (9, 10, 13))
        if printable / max(len(sample), 1) < 0.9:
            raise UnitError("binary: not a text file (NUL and control bytes)")
        raise UnitError("binary: NUL bytes in text")
    if b"\x00" in data:
        raise UnitError("binary: NUL bytes in text")
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as exc:
        utf8_error = exc
    from charset_normalizer import from_bytes

    best = from_bytes(data[: 1024 * 1024]).best()
    if best is None or best.percent_chaos > 0.2:
        raise UnitError(
            f"decode: not valid UTF-8 (byte {utf8_error.start}) and no other encoding fits"
        ) from None
    try:
        return data.decode(best.encoding), best.encoding
    except (UnicodeDecodeError, LookupError):
        raise UnitError(f"decode: not valid UTF-8 and not valid {best.encoding}") from None


def _utf16(data: bytes) -> str | None:
    """UTF-16 (or UTF-32) by its byte order mark, or UTF-16 without one when every other byte of mostly ASCII
    text is NUL (a Windows export); None otherwise."""

    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    sample = data[:_SNIFF_BYTES]
    if len(sample) < 8 or b"\x00" not in sample:
        return None
    even, odd = sample[0::2], sample[1::2]
    for zeros, other, codec in ((odd, even, "utf-16-le"), (even, odd, "utf-16-be")):
        if zeros.count(0) > 0.9 * len(zeros) and other.count(0) == 0 and len(data) % 2 == 0:
            return codec
    return None


@dataclass
class Converted:
    """A unit's text in Markdown form, its title (may be empty) and what the reader learnt about it."""

    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
