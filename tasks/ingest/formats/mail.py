"""E-mail (.eml, RFC 5322): the subject as title, the sender, recipients and date as a header block, the
plain-text body (or the HTML body as text), text attachments as sections and the others by name."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from tasks.ingest.formats.base import Converted, UnitError, decode_text
from tasks.ingest.formats.html import html_to_text

_HEADERS = ("From", "To", "Cc", "Date")
_TEXT_ATTACHMENTS = ("text/plain", "text/markdown", "text/csv", "text/x-rst")


def _part_text(part: EmailMessage) -> str:
    try:
        content = part.get_content()
    except (LookupError, UnicodeError, ValueError, AssertionError):  # unknown charset, broken encoding
        payload = part.get_payload(decode=True) or b""
        content = payload.decode("utf-8", "replace")
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    if part.get_content_type() == "text/html":
        content, _ = html_to_text(content)
    return content.strip()


def convert_eml(data: bytes) -> Converted:
    if b"\x00" in data[:8192]:
        raise UnitError("binary: NUL bytes, not an e-mail message")
    try:
        msg = BytesParser(policy=policy.default).parsebytes(data)
    except (ValueError, TypeError, IndexError) as exc:
        raise UnitError(f"eml: unreadable ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(msg, EmailMessage) or not msg.keys():  # a body saved without its headers: still text
        text, encoding = decode_text(data)
        return Converted(text, "", {"headers": False} if encoding == "utf-8" else {"headers": False, "encoding": encoding})
    subject = str(msg.get("Subject", "") or "").strip()
    header = [f"{h}: {msg[h]}" for h in _HEADERS if msg.get(h)]
    body_part = msg.get_body(preferencelist=("plain", "html"))
    body = _part_text(body_part) if body_part is not None else ""
    sections: list[str] = []
    names: list[str] = []
    for part in msg.iter_attachments():
        name = part.get_filename() or part.get_content_type()
        if part.get_content_type() in _TEXT_ATTACHMENTS and (text := _part_text(part)):
            sections.append(f"## Attachment: {name}\n\n{text}")
        else:
            names.append(name)
    parts = [f"# {subject}" if subject else "", "\n".join(header), body, *sections]
    if names:
        parts.append("Attachments: " + ", ".join(names))
    text = "\n\n".join(p for p in parts if p)
    meta = {"attachments": len(names) + len(sections)} if names or sections else {}
    return Converted(text, subject, meta)
