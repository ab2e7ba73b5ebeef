"""Who sent what, for the monitor: no single client may move it. The latest vote per request and client counts
(a later vote replaces an earlier one), a client voting in bursts is flagged and not counted, requests refused
before they were questions (keys, limits, malformed bodies) are left out, and no client makes more than a set
share of the records the figures are computed on."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from tasks.serve.requestlog import parse_time

# refusals that say nothing about answer quality: who may call, how often, and bodies that were never a question
OPERATIONAL = {"auth", "forbidden", "host", "media_type", "origin", "rate_limited", "overloaded", "not_ready",
               "internal_error", "input_json", "input_depth", "input_number", "input_not_text", "input_too_large",
               "input_timeout", "input_incomplete", "input_fields", "input_k", "input_filters"}


def client_of(rec: dict[str, Any], id_key: str) -> str:
    """The record's client; a record written before clients were logged stands for a client of its own."""
    return str(rec.get("client") or f"record:{rec.get(id_key)}")


def operational(rec: dict[str, Any]) -> bool:
    """Refused before it was a question (or failed inside the server): not a quality signal."""
    status = int(rec.get("status") or 0)
    if status >= 500:
        return True
    return status >= 400 and any(d.get("check") in OPERATIONAL for d in rec.get("guardrails") or [])


def asked(requests: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """(the /v1/ask records that were questions, how many requests were refused operationally)."""
    ask = [r for r in requests if r.get("endpoint", "ask") == "ask"]
    kept = [r for r in ask if not operational(r)]
    return kept, len(requests) - len(kept)


def cap_share(records: list[dict[str, Any]], share: float, id_key: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Records such that no client makes more than `share` of them (at least 1/clients, so that few clients still
    count equally): the largest per-client cap c with max_i min(n_i, c) <= share * sum_j min(n_j, c); a client over
    it keeps c records spread evenly over its own. Returns (kept records in their order, {clients, cap, capped})."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        groups[client_of(rec, id_key)].append(rec)
    if not groups:
        return [], {"clients": 0, "cap": None, "capped": {}}
    share = max(share, 1 / len(groups))
    sizes = sorted((len(v) for v in groups.values()), reverse=True)
    cap = 1
    while cap < sizes[0] and (cap + 1) <= share * sum(min(n, cap + 1) for n in sizes) + 1e-9:
        cap += 1
    keep: set[int] = set()
    capped = {}
    for client, recs in groups.items():
        if len(recs) > cap:
            capped[client] = len(recs)
            recs = [recs[int(j * len(recs) / cap)] for j in range(cap)]
        keep.update(id(r) for r in recs)
    return [r for r in records if id(r) in keep], {"clients": len(groups), "cap": cap if capped else None,
                                                   "capped": capped}


def latest_votes(feedback: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The votes that may count: valid, counted (anonymous votes on an open server are not, by default), the latest
    per request and client. Returns (votes, {votes, uncounted, replaced})."""
    valid = [f for f in feedback if f.get("rating") in ("up", "down") and not f.get("refused")]
    counted = [f for f in valid if f.get("counted", True) is not False]
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for f in counted:  # oldest first: a later vote replaces an earlier one
        latest[(str(f.get("request_id")), client_of(f, "feedback_id"))] = f
    return list(latest.values()), {"votes": len(valid), "uncounted": len(valid) - len(counted),
                                   "replaced": len(counted) - len(latest)}


def vote_bursts(feedback: list[dict[str, Any]], per_minute: int) -> dict[str, int]:
    """Clients that sent more than `per_minute` votes (replaced ones too) within some minute: client -> the most
    they sent in one minute."""
    times: dict[str, list[Any]] = defaultdict(list)
    for f in feedback:
        if f.get("rating") in ("up", "down") and f.get("client"):
            try:
                times[f["client"]].append(parse_time(str(f["at"])))
            except (KeyError, ValueError):
                continue
    out = {}
    for client, ts in times.items():
        ts.sort()
        most, start = 0, 0
        for end, t in enumerate(ts):
            while t - ts[start] >= timedelta(minutes=1):
                start += 1
            most = max(most, end - start + 1)
        if most > per_minute:
            out[client] = most
    return out
