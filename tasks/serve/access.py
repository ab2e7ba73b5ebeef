"""Who is calling, and may they: API-key identities with roles, anonymous clients told apart by IP address, the
CSRF checks on state-changing requests, per-client rate limits (the `limits` library, moving windows) and the
bound on questions in progress. Every refusal is a `GuardrailError` with its HTTP status."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from tasks.core.workspace import Workspace
from tasks.serve.config import ServeConfig
from tasks.serve.guardrails import GuardrailError
from tasks.serve.keys import KeyRing, role_allows

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str | None) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) is this machine's loopback."""
    if not host:
        return False
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(cfg: ServeConfig, ring: KeyRing) -> None:
    """Refuse to serve beyond loopback with nobody to tell apart: without API keys, only `--allow-anonymous`
    (an explicit choice) lets a server listen on another interface."""
    if not is_loopback(cfg.host) and not ring.active and not cfg.auth.allow_anonymous:
        raise ValueError(f"refusing to listen on {cfg.host} without API keys: anyone who can reach it could ask, vote "
                         "and so steer retraining. Create a key (`ragtune keys create --role feedback`), or pass "
                         "--allow-anonymous to serve anonymous clients on purpose")


@dataclass(frozen=True)
class Identity:
    """A caller: `client` is "key:<id>" for an API key, "ip:<keyed hash of the address>" when anonymous; `counted`
    says whether its votes count in the monitor."""

    client: str
    role: str
    anonymous: bool
    counted: bool


def client_salt(ws: Workspace) -> bytes:
    """The workspace's secret for naming anonymous clients: logs hold a keyed hash of an address, never the address."""
    path = ws.root / "serve" / "client_salt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "x", encoding="utf-8") as fh:  # "x": two workers starting together keep one salt
                fh.write(secrets.token_hex(16))
        except FileExistsError:
            pass
    return path.read_text(encoding="utf-8").strip().encode()


class Throttle:
    """Per-client moving-window rate limits, one list of limits per endpoint; a request is counted only when it
    passes all of them."""

    def __init__(self, rates: dict[str, str | None]) -> None:
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.rates = {name: parse_many(rate) if rate else [] for name, rate in rates.items()}
        self.told: dict[tuple[str, str], float] = {}  # (endpoint, client) -> end of the window it was refused in

    def retry_after(self, endpoint: str, client: str) -> int | None:
        """None when the request may go on (and is counted), else the seconds until it may."""
        items = self.rates.get(endpoint) or []
        for item in items:
            if not self.limiter.test(item, endpoint, client):
                reset = self.limiter.get_window_stats(item, endpoint, client).reset_time
                return max(1, math.ceil(reset - time.time()))
        for item in items:
            self.limiter.hit(item, endpoint, client)
        return None

    def first_refusal(self, endpoint: str, client: str, wait: int) -> bool:
        """Whether this is the client's first refusal until its window ends (the one worth a log line)."""
        now = time.time()
        if len(self.told) > 10_000:
            self.told = {k: end for k, end in self.told.items() if end > now}
        if self.told.get((endpoint, client), 0) > now:
            return False
        self.told[(endpoint, client)] = now + wait
        return True


class Admission:
    """The bound on questions in progress: past `limit` a question is refused at once (503) with the time the ones
    in progress take to be answered, instead of waiting behind them for minutes."""

    def __init__(self, limit: int) -> None:
        self.limit, self.inflight, self.mean_s = limit, 0, 1.0

    def enter(self) -> None:
        if self.inflight >= self.limit:
            raise GuardrailError("overloaded", f"{self.inflight} questions are in progress (the limit is "
                                 f"{self.limit}): try again shortly", 503, retry_after=self.retry_after())
        self.inflight += 1

    def leave(self, seconds: float) -> None:
        self.inflight -= 1
        self.mean_s = 0.8 * self.mean_s + 0.2 * seconds  # recent answers: what the ones in progress will take

    def retry_after(self) -> int:
        return min(60, max(1, math.ceil(self.mean_s)))


class Gate:
    """The checks in front of every endpoint, in the order they run: identity, role, CSRF, rate limit."""

    def __init__(self, ws: Workspace, cfg: ServeConfig) -> None:
        self.ws, self.cfg = ws, cfg
        self.ring = KeyRing.load(ws)
        self.loopback = is_loopback(cfg.host)
        self.salt = client_salt(ws)
        self.throttle = Throttle({"ask": cfg.limits.ask_rate, "feedback": cfg.limits.feedback_rate})

    @property
    def local(self) -> bool:
        """A loopback server without keys: the operator's own machine, where anonymous callers may do anything."""
        return self.loopback and not self.ring.active

    def identify(self, headers: Any, peer: str | None) -> Identity:
        """The caller, from `Authorization: Bearer <key>`, else anonymous where that is allowed; 401 otherwise."""
        self.ring = KeyRing.load(self.ws, self.ring)  # a stat per request: keys created or revoked apply at once
        auth = headers.get("authorization")
        if auth:
            scheme, _, token = auth.partition(" ")
            record = self.ring.verify(token.strip()) if scheme.lower() == "bearer" else None
            if record is None:
                raise GuardrailError("auth", "unknown, revoked or malformed API key (send Authorization: Bearer "
                                     "<key>)", 401)
            return Identity(f"key:{record['id']}", record["role"], False, True)
        if self.local:
            self._check_host(headers)
            return Identity(self._anonymous(peer), "admin", True, True)
        if self.cfg.auth.allow_anonymous:
            return Identity(self._anonymous(peer), self.cfg.auth.anonymous_role, True,
                            self.cfg.auth.anonymous_feedback_counts)
        raise GuardrailError("auth", "an API key is required: send Authorization: Bearer <key> (ragtune keys create)",
                             401)

    def _anonymous(self, peer: str | None) -> str:
        return "ip:" + hmac.new(self.salt, (peer or "unknown").encode(), hashlib.sha256).hexdigest()[:16]

    def _check_host(self, headers: Any) -> None:
        # without keys, only a loopback name may reach the server: a web page that rebinds its own name to
        # 127.0.0.1 (DNS rebinding) sends its name as the Host
        host = urlsplit(f"//{headers.get('host') or ''}").hostname
        if not is_loopback(host):
            raise GuardrailError("host", f"this server answers loopback names only, not {str(host)[:60]!r}", 403)

    @staticmethod
    def require(who: Identity, role: str) -> None:
        if not role_allows(who.role, role):
            raise GuardrailError("forbidden", f"this {'client' if who.anonymous else 'API key'} has the role "
                                 f"{who.role!r}; this needs {role!r}", 403)

    def check_post(self, headers: Any) -> None:
        """CSRF: a state-changing request is JSON (a form or a text/plain POST from another site cannot be) and
        comes from the server's own origin or an allowed one."""
        media = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            raise GuardrailError("media_type", f"send Content-Type: application/json, not {media[:60] or 'nothing'!r}",
                                 415)
        origin = headers.get("origin")
        if origin is None or origin in self.cfg.auth.allowed_origins:
            return
        if origin == "null" or urlsplit(origin).netloc != (headers.get("host") or ""):
            raise GuardrailError("origin", f"requests from the origin {origin[:80]!r} are not allowed (CSRF); "
                                 "allow it in serve.auth.allowed_origins", 403)

    def limit(self, endpoint: str, who: Identity) -> None:
        wait = self.throttle.retry_after(endpoint, who.client)
        if wait is not None:
            raise GuardrailError("rate_limited", f"too many {endpoint} requests from this client: retry in {wait} s",
                                 429, retry_after=wait, logged=self.throttle.first_refusal(endpoint, who.client, wait))
