"""Fetching http(s) sources with size and time limits; credentials never leave this module."""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tasks.ingest.formats.base import UnitError

ALLOWED_SCHEMES = ("http", "https")
_SECRET_PARAMS = {
    "token", "access_token", "api_key", "apikey", "key", "secret", "password", "pwd", "sig", "signature",
    "x-amz-signature", "x-amz-credential", "x-amz-security-token", "auth", "code",
}


def redact_url(url: str) -> str:
    """The URL without user:password and with secret-looking query values masked (for logs and records)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    query = urlencode(
        [(k, "REDACTED" if k.lower() in _SECRET_PARAMS else v) for k, v in parse_qsl(parts.query, True)],
        safe="",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@dataclass
class Fetched:
    url: str
    final_url: str
    content_type: str | None
    data: bytes


def fetch_url(url: str, *, timeout_s: float, max_bytes: int, retries: int = 0) -> Fetched:
    """GET `url` within `timeout_s` in total and `max_bytes` of body; a `UnitError` names what went wrong."""
    import httpx

    scheme = urlsplit(url).scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise UnitError(f"url: scheme {scheme!r} not allowed (http and https only)", "filtered")
    safe = redact_url(url)
    deadline = time.monotonic() + timeout_s
    transport = httpx.HTTPTransport(retries=retries)  # retries connection failures of this idempotent GET
    try:
        with httpx.Client(
            transport=transport, timeout=httpx.Timeout(timeout_s), follow_redirects=True, max_redirects=5,
            headers={"User-Agent": "ragtune/0.1 (+document collector)"},
        ) as client, client.stream("GET", url) as resp:
            if urlsplit(str(resp.url)).scheme.lower() not in ALLOWED_SCHEMES:
                raise UnitError("url: redirected to a scheme other than http(s)")
            if resp.status_code >= 400:
                raise UnitError(f"url: HTTP {resp.status_code} from {safe}")
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise UnitError(f"url: too large ({int(declared)} bytes > limit {max_bytes})")
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise UnitError(f"url: too large (more than {max_bytes} bytes)")
                if time.monotonic() > deadline:
                    raise UnitError(f"url: timed out after {timeout_s:g} s")
                chunks.append(chunk)
            return Fetched(safe, redact_url(str(resp.url)), resp.headers.get("content-type"), b"".join(chunks))
    except httpx.TimeoutException:
        raise UnitError(f"url: timed out after {timeout_s:g} s") from None
    except httpx.TooManyRedirects:
        raise UnitError("url: too many redirects") from None
    except httpx.HTTPError as exc:
        raise UnitError(f"url: {type(exc).__name__} fetching {safe}") from None
