"""Prefect events that ragtune emits (`ragtune.model.promoted`, `ragtune.model.rejected`, ...), so automations can
react to them. Emitting needs a reachable Prefect API; without one the event is skipped and the caller told."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("ragtune.events")


def emit(event: str, resource_id: str, payload: dict[str, Any] | None = None,
         related: list[dict[str, str]] | None = None) -> bool:
    """Emit one event; True when it was handed to Prefect's event client, False when no API is reachable."""
    from prefect.events import emit_event
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        from prefect.context import FlowRunContext

        if FlowRunContext.get() is None:  # outside a flow run there is no temporary server to talk to
            log.warning("event %s not emitted: no Prefect API (set PREFECT_API_URL)", event)
            return False
    try:
        sent = emit_event(event=event, resource={"prefect.resource.id": resource_id, "prefect.resource.name":
                                                 resource_id.rsplit(".", 1)[-1]},
                          related=related or [], payload=payload or {})
    except Exception as exc:  # an event is a notification: never fail the stage that emits it
        log.warning("event %s not emitted: %s", event, exc)
        return False
    return sent is not None


def require_api() -> str:
    """The Prefect server URL, or a one-line error: events need a server that runs automations."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise RuntimeError("ragtune watch needs a running Prefect server to send events to: set PREFECT_API_URL "
                           "(`make server` starts one at http://127.0.0.1:4200/api)")
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        err = client.api_healthcheck()
    if err is not None:
        raise RuntimeError(f"the Prefect API at {url} is not reachable ({type(err).__name__}): start it with "
                           "`make server`, or fix PREFECT_API_URL")
    return url
