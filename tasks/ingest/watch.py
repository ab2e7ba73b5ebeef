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


def watch(root: Path, emit: Callable[..., bool], debounce_ms: int = 1600, stop_event: Any = None,
          on_batch: Callable[[dict[str, list[str]]], None] | None = None) -> int:
    """Watch `root` until interrupted (or `stop_event` is set); one event per debounced batch of changes, handed
    to `emit(event, resource, payload) -> sent?` (the flows' Prefect emitter). Returns the number sent."""
    from watchfiles import watch as watch_changes  # the file-event library: only `ragtune watch` needs it

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
