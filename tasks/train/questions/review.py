"""Review of generated pairs (`ragtune questions list|accept|reject`), the same shape as feedback review: a
reviewer accepts a pair that was set aside or rejects an accepted one; decisions are kept in
`questions/reviews.jsonl` (by pair id, so they survive regeneration) and applied to every later question set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.core.workspace import Workspace, read_jsonl, utc_now, write_jsonl

STATUSES = ("accepted", "set_aside", "duplicate", "rejected")
LOCK_WAIT_S = 30.0


def reviews_path(ws: Workspace) -> Path:
    return ws.root / "questions" / "reviews.jsonl"


def read_reviews(ws: Workspace) -> dict[str, dict[str, Any]]:
    """The latest decision per pair id."""
    path = reviews_path(ws)
    out: dict[str, dict[str, Any]] = {}
    for r in read_jsonl(path) if path.is_file() else []:
        out[r["pair_id"]] = r
    return out


def status_of(line: dict[str, Any]) -> str:
    """accepted, set_aside (filtered by a check), duplicate, or rejected (by a reviewer)."""
    if line["fate"] == "accepted":
        return "accepted"
    if (line.get("review") or {}).get("decision") == "rejected":
        return "rejected"
    return "duplicate" if line["fate"] == "duplicate" else "set_aside"


def apply_reviews(lines: list[dict[str, Any]], reviews: dict[str, dict[str, Any]]) -> None:
    """A reviewer's decision overrides the checks: accepted pairs get fate accepted, rejected ones fate filtered,
    each with the decision and the checks' own verdict in the reason."""
    for c in lines:
        r = reviews.get(c["pair_id"])
        if r is None:
            continue
        was = c.get("checks") or c["reason"]
        c["checks"] = was
        if r["decision"] == "accepted":
            c["fate"], c["reason"] = "accepted", f"review: accepted by {r['by']}" + (
                f" (checks said: {was})" if was != "ok" else "")
        else:
            c["fate"], c["reason"] = "filtered", f"review: rejected by {r['by']}: {r['reason']}"
        c["review"] = {"decision": r["decision"], "by": r["by"], "at": r["at"], "reason": r.get("reason")}


def record(ws: Workspace, pair_ids: list[str], decision: str, reason: str, by: str, known: set[str]) -> list[str]:
    """Append decisions for `pair_ids` (each must be a pair of the latest question set); returns them."""
    unknown = sorted(set(pair_ids) - known)
    if unknown:
        raise KeyError(f"no pair {unknown[0]} in the latest question set (see `ragtune questions list`)")
    path = reviews_path(ws)
    with ws.lock("questions-review", timeout_s=LOCK_WAIT_S):
        old = read_jsonl(path) if path.is_file() else []
        write_jsonl(path, [*old, *({"pair_id": p, "decision": decision, "reason": reason, "by": by, "at": utc_now()}
                                   for p in pair_ids)])
    return pair_ids
