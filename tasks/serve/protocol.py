"""The HTTP/1.1 protocol of `ragtune serve`: uvicorn's h11 protocol with the deadlines uvicorn does not have. A
request's headers must arrive within `limits.header_timeout_s` of the connection opening (or of the previous
response), its body within `limits.body_timeout_s` of the headers (plus a little: the app answers a late body
with its own JSON 408 first). Past a deadline the client gets a 408, when no response was started, and the
connection is closed, so that slow clients cannot hold connections open (slowloris)."""

from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from tasks.serve.config import LimitConfig, ServeConfig

log = logging.getLogger("ragtune.serve")
BODY_GRACE_S = 2.0  # the app's own body deadline answers first, with a request-log line


@lru_cache(maxsize=1)
def _limits(raw: str | None) -> LimitConfig:
    return ServeConfig.model_validate_json(raw).limits if raw else LimitConfig()


def limits() -> LimitConfig:
    """The running server's limits (`run` puts its settings in RAGTUNE_SERVE_CONFIG for every worker)."""
    return _limits(os.environ.get("RAGTUNE_SERVE_CONFIG"))


def timeout_response(what: str) -> bytes:
    body = json.dumps({"error": f"request timeout: the {what} did not arrive in time", "check": "input_timeout"})
    return (f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n{body}").encode()


class TimedH11Protocol(H11Protocol):
    """h11 with a deadline per phase of a request: waiting for headers, then for the body."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = limits()
        self.deadlines = {h11.IDLE: ("headers", cfg.header_timeout_s),
                          h11.SEND_BODY: ("body", cfg.body_timeout_s + BODY_GRACE_S)}
        self._phase: Any = None
        self._timer: Any = None

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _track(self) -> None:
        """(Re)start the deadline when the client's side enters a new phase; a byte that arrives within a phase does
        not extend it (that is what a slow client counts on)."""
        phase = self.conn.their_state
        if phase is self._phase:
            return
        self._phase = phase
        self._cancel()
        if phase in self.deadlines and not self.transport.is_closing():
            what, seconds = self.deadlines[phase]
            self._timer = self.loop.call_later(seconds, self._expired, what)

    def _expired(self, what: str) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        peer = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.warning("closing the connection of %s: the request %s did not arrive in time", peer, what)
        if what == "headers" or self.cycle is None or not self.cycle.response_started:  # nothing sent for it yet
            self.transport.write(timeout_response(what))
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()
