"""Model registry under the workspace: versions of trained adapters and the aliases `champion`, `challenger` and
`archived`. Every alias change is one atomic replace of `aliases.json`; `history.jsonl` records each move."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tasks.core.workspace import Workspace, atomic_write_json, read_json, read_jsonl, utc_now, write_jsonl

EMPTY = {"champion": None, "challenger": None, "archived": [], "champions": []}


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (nothing to roll back to, unknown version...)."""


def _root(ws: Workspace) -> Path:
    return ws.registry


def aliases(ws: Workspace) -> dict[str, Any]:
    """{champion, challenger, archived: [...], champions: [every version that was champion, oldest first]}."""
    data = read_json(_root(ws) / "aliases.json", default=None) or {}
    return {**EMPTY, **data}


def version_record(ws: Workspace, version: str) -> dict[str, Any]:
    rec = read_json(_root(ws) / "versions" / f"{version}.json", default=None)
    if rec is None:
        raise RegistryError(f"no model version {version!r} in {_root(ws)}")
    return rec


def resolve(ws: Workspace, alias: str) -> dict[str, Any] | None:
    """The version record an alias points at, or None."""
    v = aliases(ws).get(alias)
    return version_record(ws, v) if isinstance(v, str) else None


def versions(ws: Workspace) -> list[dict[str, Any]]:
    folder = _root(ws) / "versions"
    recs = [read_json(p) for p in folder.glob("*.json")] if folder.is_dir() else []
    return sorted(recs, key=lambda r: r["number"])


def tokenizer_fingerprint(folder: str | Path) -> str | None:
    """sha256 over the tokenizer files of an adapter or model folder: equal tokenizers, equal fingerprints."""
    h = hashlib.sha256()
    found = False
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        p = Path(folder) / name
        if p.is_file():
            h.update(name.encode())
            h.update(p.read_bytes())
            found = True
    return h.hexdigest()[:16] if found else None


def _write(ws: Workspace, state: dict[str, Any], event: dict[str, Any]) -> None:
    atomic_write_json(_root(ws) / "aliases.json", state)  # the move itself: one atomic replace
    path = _root(ws) / "history.jsonl"
    write_jsonl(path, [*(read_jsonl(path) if path.exists() else []), {"at": utc_now(), **event}])


def record_of_run(ws: Workspace, run_id: str) -> dict[str, Any] | None:
    """The version record of a training run, or None when it was never registered."""
    return next((r for r in versions(ws) if r["run_id"] == run_id), None)


def register(ws: Workspace, run_meta: dict[str, Any], as_challenger: bool = True) -> dict[str, Any]:
    """The version record of a finished training run, created on first use (a run is registered once). A new
    version becomes the challenger (with `as_challenger`); registering it again changes nothing."""
    with ws.lock("registry", timeout_s=60):
        existing = [r for r in versions(ws) if r["run_id"] == run_meta["run_id"]]
        if existing:
            return existing[0]
        number = max((r["number"] for r in versions(ws)), default=0) + 1
        rec = {"version": f"v{number}", "number": number, "run_id": run_meta["run_id"],
               "adapter_dir": run_meta["adapter_dir"], "base_model": run_meta["base_model"],
               "base_model_path": run_meta.get("base_model_path"),
               "tokenizer": tokenizer_fingerprint(run_meta["adapter_dir"]),
               "dataset_version": run_meta.get("dataset_version"), "index_version": run_meta.get("index_version"),
               "train_metrics": run_meta.get("metrics", {}), "registered_at": utc_now()}
        atomic_write_json(_root(ws) / "versions" / f"{rec['version']}.json", rec)
        if as_challenger:
            _make_challenger(ws, rec["version"])
        return rec


def _make_challenger(ws: Workspace, version: str) -> dict[str, Any]:
    """Point `challenger` at `version` (the one it replaces is archived); the champion cannot be a challenger."""
    state = aliases(ws)
    if state["champion"] == version or state["challenger"] == version:
        return state
    old = state["challenger"]
    state.update(challenger=version, archived=([old] if old else []) + [v for v in state["archived"] if v != version])
    _write(ws, state, {"action": "challenger", "version": version, "replaced": old})
    return state


def promote(ws: Workspace, version: str, reason: str, evaluation: str | None = None) -> dict[str, Any]:
    """Make `version` the champion; the previous champion is archived (kept for rollback)."""
    with ws.lock("registry", timeout_s=60):
        version_record(ws, version)
        state = aliases(ws)
        old = state["champion"]
        if old == version:
            return state
        state["archived"] = ([old] if old else []) + [v for v in state["archived"] if v not in (version, old)]
        state["champions"] = [*state["champions"], version]
        state["champion"] = version
        if state["challenger"] == version:
            state["challenger"] = None
        _write(ws, state, {"action": "promote", "version": version, "previous": old, "reason": reason,
                           "evaluation": evaluation})
        return state


def reject(ws: Workspace, version: str, reason: str, evaluation: str | None = None) -> dict[str, Any]:
    """Archive a candidate that failed the gate (it stays registered, with the decision in the history)."""
    with ws.lock("registry", timeout_s=60):
        state = aliases(ws)
        if state["champion"] == version:
            raise RegistryError(f"{version} is the champion; use rollback to replace it")
        if state["challenger"] != version and version in state["archived"]:
            return state  # archived already: a repeated decision moves nothing
        if state["challenger"] == version:
            state["challenger"] = None
        state["archived"] = [version] + [v for v in state["archived"] if v != version]
        _write(ws, state, {"action": "reject", "version": version, "reason": reason, "evaluation": evaluation})
        return state


def rollback(ws: Workspace, reason: str = "manual rollback") -> tuple[str, str]:
    """Restore the champion before the current one; returns (from, to)."""
    with ws.lock("registry", timeout_s=60):
        state = aliases(ws)
        current = state["champion"]
        earlier = [v for v in reversed(state["champions"][:-1]) if v != current]
        if current is None or not earlier:
            raise RegistryError("no earlier champion to roll back to")
        target = earlier[0]
        state["champions"] = [v for v in state["champions"] if v != current]
        state["champion"] = target
        state["archived"] = [current] + [v for v in state["archived"] if v not in (current, target)]
        _write(ws, state, {"action": "rollback", "version": target, "previous": current, "reason": reason})
        return current, target


def history(ws: Workspace) -> list[dict[str, Any]]:
    path = _root(ws) / "history.jsonl"
    return read_jsonl(path) if path.exists() else []
