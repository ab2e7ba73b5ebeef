"""API keys of the server (`ragtune keys`): each key has a role, and only a SHA-256 hash of it is stored, in
`serve/keys.json` of the workspace. A key reads `rt_<id>_<secret>`: the id finds the record, the hash proves the
secret. The server rereads the file when it changes, so a revoked key stops working at its next request."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.workspace import Workspace, atomic_write_json, read_json, utc_now

ROLES = ("ask", "feedback", "admin")  # each role may do what the roles before it may
PREFIX = "rt_"


def keys_path(ws: Workspace) -> Path:
    return ws.root / "serve" / "keys.json"


def role_allows(role: str, needed: str) -> bool:
    """Whether `role` may do what `needed` names (ask < feedback < admin)."""
    return ROLES.index(role) >= ROLES.index(needed)


def _digest(token: str) -> str:
    # a key holds 256 random bits: a plain hash is as safe as a slow one here, and costs nothing per request
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def read_keys(ws: Workspace) -> list[dict[str, Any]]:
    data = read_json(keys_path(ws), default=None) or {}
    return list(data.get("keys") or [])


def _write(ws: Workspace, keys: list[dict[str, Any]]) -> None:
    path = keys_path(ws)
    atomic_write_json(path, {"keys": keys})
    os.chmod(path, 0o600)  # hashes only, but nobody else needs to read them


def create_key(ws: Workspace, role: str, name: str | None = None) -> tuple[dict[str, Any], str]:
    """A new key of `role`: (its record, the key itself, shown once and never stored)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    with ws.lock("keys", timeout_s=30):
        keys = read_keys(ws)
        key_id = secrets.token_hex(4)
        while any(k["id"] == key_id for k in keys):
            key_id = secrets.token_hex(4)
        token = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = {"id": key_id, "name": name or f"{role}-{key_id}", "role": role, "sha256": _digest(token),
                  "created_at": utc_now(), "revoked_at": None}
        _write(ws, [*keys, record])
    return public(record), token


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A key record without its hash (what `ragtune keys list` shows)."""
    return {k: v for k, v in record.items() if k != "sha256"}


def list_keys(ws: Workspace) -> list[dict[str, Any]]:
    return [public(k) for k in read_keys(ws)]


def revoke_key(ws: Workspace, key_id: str) -> dict[str, Any]:
    """Mark a key revoked (kept in the file, so the record says who it was and when it ended)."""
    with ws.lock("keys", timeout_s=30):
        keys = read_keys(ws)
        found = next((k for k in keys if k["id"] == key_id), None)
        if found is None:
            raise ValueError(f"no key {key_id!r} (see ragtune keys list)")
        if not found.get("revoked_at"):
            found["revoked_at"] = utc_now()
            _write(ws, keys)
    return public(found)


@dataclass(frozen=True)
class KeyRing:
    """The active keys, by id; `KeyRing.load` rereads the file only when it changed."""

    by_id: dict[str, dict[str, Any]]
    stamp: tuple[int, int] | None

    @property
    def active(self) -> bool:
        return bool(self.by_id)

    def verify(self, token: str) -> dict[str, Any] | None:
        """The record of an active key, or None for a malformed, unknown or revoked one."""
        if not token.startswith(PREFIX) or token.count("_") < 2:
            return None
        key_id = token[len(PREFIX):].split("_", 1)[0]
        record = self.by_id.get(key_id)
        if record is None or not hmac.compare_digest(record["sha256"], _digest(token)):
            return None
        return record

    @classmethod
    def load(cls, ws: Workspace, previous: KeyRing | None = None) -> KeyRing:
        try:
            st = keys_path(ws).stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if previous is not None and previous.stamp == stamp:
            return previous
        active = {k["id"]: k for k in read_keys(ws) if not k.get("revoked_at") and k.get("role") in ROLES}
        return cls(active, stamp)
