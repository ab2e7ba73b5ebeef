"""`ragtune watch`: watch a source folder (watchfiles, debounced) and emit `ragtune.corpus.changed` with the added,
changed and deleted paths, so the refresh-on-change deployment re-ingests and updates the index in place."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("ragtune.watch")
EVENT = "ragtune.corpus.changed"
SUPPORTED = {".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".jsonl", ".json", ".parquet"}


def classify(changes: Iterable[tuple[Any, str]], root: Path) -> dict[str, list[str]]:
    """watchfiles' (Change, path) pairs -> {added, changed, deleted} paths relative to `root`, for the
    document types ragtune reads, without dotfiles or editor temporaries. A path first added then deleted
    within one debounce window is left out; modified after being added, it counts as added."""
    state: dict[str, str] = {}
    for change, raw in changes:
        kind = getattr(change, "name", str(change))  # Change.added / modified / deleted
        rel = os.path.relpath(raw, root)
        parts = Path(rel).parts
        if rel.startswith("..") or any(p.startswith(".") for p in parts) or Path(rel).suffix.lower() not in SUPPORTED:
            continue
        before = state.get(rel)
        if kind == "added":
            state[rel] = "changed" if before == "deleted" else "added"
        elif kind == "modified":
            state[rel] = before if before in ("added", "changed") else "changed"
        elif kind == "deleted":
            if before == "added":
                state.pop(rel)
            else:
                state[rel] = "deleted"
    out: dict[str, list[str]] = {"added": [], "changed": [], "deleted": []}
    for rel, kind in sorted(state.items()):
        out[kind].append(rel)
    return out


def corpus_resource(root: Path) -> str:
    """A stable resource id per watched folder (`ragtune.corpus.<folder name>`)."""
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in root.resolve().name) or "root"
    return f"ragtune.corpus.{name}"


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


def watch(root: Path, debounce_ms: int = 1600, emit: Callable[..., bool] | None = None,
          stop_event: Any = None, on_batch: Callable[[dict[str, list[str]]], None] | None = None) -> int:
    """Watch `root` until interrupted (or `stop_event` is set); one event per debounced batch of changes.
    Returns the number of events emitted."""
    from watchfiles import watch as watch_changes

    from tasks import events

    emit = emit or events.emit
    root = root.resolve()
    sent = 0
    for batch in watch_changes(root, debounce=debounce_ms, stop_event=stop_event, recursive=True,
                               raise_interrupt=False):
        found = classify(batch, root)
        if not any(found.values()):
            continue
        payload = {"source": str(root), **found, "paths": sorted(found["added"] + found["changed"] + found["deleted"])}
        if emit(EVENT, corpus_resource(root), payload):
            sent += 1
        log.info("%s: %d added, %d changed, %d deleted", EVENT, len(found["added"]), len(found["changed"]),
                 len(found["deleted"]))
        if on_batch:
            on_batch(payload)
    return sent
