"""What one server process holds (settings, the engine watcher, the access gate, the logs, the metrics) and the
answer path of one question: cache, retrieval, the not-found threshold, batched generation and the output check,
the same checks `ragtune ask` applies."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

from tasks.core.workspace import Workspace
from tasks.serve import guardrails as g
from tasks.serve.access import Admission, Gate, Identity
from tasks.serve.ask import cache_key, cached_answer, source_list, store_answer
from tasks.serve.config import NOT_FOUND_ANSWER, AskConfig, ServeConfig
from tasks.serve.engine import Server
from tasks.serve.guardrails import GuardrailError, decision
from tasks.serve.metrics import Metrics
from tasks.serve.requestlog import FEEDBACK, REQUESTS, SegmentWriter, find_feedback, find_request, now_iso
from tasks.train.prompt import build_messages, format_context

RECENT = 10_000  # request ids (and votes) remembered in memory; older ones are looked up in the logs


class Service:
    """Everything one server process holds: settings, the engine watcher, the gate, the logs and the metrics."""

    def __init__(self, ws: Workspace, cfg: ServeConfig) -> None:
        self.ws, self.cfg, self.started = ws, cfg, time.time()
        self.metrics = Metrics()
        self.gate = Gate(ws, cfg)
        self.admission = Admission(cfg.limits.max_queue)
        self.server = Server(ws, cfg, on_swap=self._swapped, on_batch=self.metrics.batch.observe)
        self.requests = SegmentWriter(ws, REQUESTS, cfg.segment_max_records)
        self.feedback = SegmentWriter(ws, FEEDBACK, cfg.segment_max_records)
        self.recent: OrderedDict[str, dict[str, Any]] = OrderedDict()  # request id -> logged record
        self.votes: OrderedDict[tuple[str, str], str] = OrderedDict()  # (request id, client) -> latest feedback id

    def _swapped(self, old: Any, new: Any) -> None:
        if old is not None:
            # 0, not removed: a removed label lingers in multiprocess mode's files, and a 0 says "was served"
            self.metrics.served.labels(old.model_version, str(old.index_state)).set(0)
            self.metrics.swaps.inc()
        self.metrics.served.labels(new.model_version, str(new.index_state)).set(1)

    def remember(self, record: dict[str, Any]) -> None:
        self.requests.append(record)
        if record.get("endpoint", "ask") == "ask":
            self.recent[record["request_id"]] = record
            while len(self.recent) > RECENT:
                self.recent.popitem(last=False)

    def lookup(self, request_id: str) -> dict[str, Any] | None:
        return self.recent.get(request_id) or find_request(self.ws, request_id)

    def previous_vote(self, request_id: str, client: str) -> str | None:
        """The feedback id of this client's earlier vote on the request (the new vote replaces it)."""
        known = self.votes.get((request_id, client))
        if known is None:
            rec = find_feedback(self.ws, request_id, client)
            known = rec["feedback_id"] if rec else None
        return known

    def record_vote(self, item: dict[str, Any]) -> None:
        self.feedback.append(item)
        self.votes[(item["request_id"], item["client"])] = item["feedback_id"]
        while len(self.votes) > RECENT:
            self.votes.popitem(last=False)

    def count(self, decisions: list[dict[str, str]]) -> None:
        for d in decisions:
            self.metrics.guardrails.labels(d["check"], d["action"]).inc()


def public_uri(source_uri: str | None, doc_id: str | None) -> str | None:
    """Where a source is, as a client may see it: a local file by its path under the source root (the document id
    of a folder source), never the server's own file system; a web or dataset address as it is."""
    if not source_uri:
        return doc_id
    scheme = urlsplit(source_uri).scheme.lower()
    if scheme in ("http", "https", "hf"):
        return source_uri
    return (doc_id or "").split("#", 1)[0] or None


def public_sources(sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**s, "source_uri": public_uri(s.get("source_uri"), s.get("doc_id"))} for s in sources]


def _not_found(out: dict[str, Any], support: float | None, threshold: float, where: str,
               decisions: list[dict[str, str]]) -> None:
    shown = support if support is None else round(support, 3)
    decisions.append(decision("not_found", "refuse", f"support {shown} < {threshold:.3f} ({where})"))
    out.update(answer=NOT_FOUND_ANSWER, sources=[], not_found=True)  # a refusal cites nothing


def answer(svc: Service, question: str, k: int | None, filters: dict[str, Any] | None,
           decisions: list[dict[str, str]]) -> dict[str, Any]:
    """Retrieve, check, generate (batched) and check one screened question; blocking (runs in a worker thread)."""
    cfg = svc.cfg.guardrails
    logged_q, pii = g.redact(question, cfg)
    if pii:
        decisions.append(decision("pii", "redact", ", ".join(f"{k_} {n}" for k_, n in sorted(pii.items()))))
    engine = svc.server.acquire()
    pending = True  # counted as heading for generation until its prompt is queued or it is answered otherwise

    def done() -> None:
        nonlocal pending
        if pending:
            pending = False
            engine.submitted()

    try:
        data = engine.data
        k = k or svc.cfg.k or data.context_k
        variant = {"k": k, "filters": filters} if (k != data.context_k or filters) else None
        ask_cfg = AskConfig(max_new_tokens=svc.cfg.max_new_tokens, index_name=svc.cfg.index_name)
        key = cache_key(question, engine.index_state, engine.model_version, ask_cfg, data, variant)
        threshold, where = g.support_threshold(svc.ws, cfg)
        # an entry without its support (written by `ragtune ask`) cannot pass the not-found check: answered again
        hit = cached_answer(svc.ws, key, cfg) if svc.cfg.cache else None
        hit = hit if hit and hit.get("support") is not None else None
        out: dict[str, Any] = {"model": engine.model_version, "index_version": engine.index_state, "cached": False,
                               "not_found": False, "blocked": False, "support": None, "closest": []}
        if hit and engine.retriever and cfg.not_found and hit["support"] < threshold:
            _not_found(out, hit["support"], threshold, where, decisions)
            out.update(cached=True, support=hit["support"])
        elif hit:
            svc.metrics.cache_hits.inc()
            decisions += hit["guardrails"]
            out.update(answer=hit["answer"], sources=[] if hit["blocked"] else hit["sources"], cached=True,
                       support=hit["support"], blocked=hit["blocked"])
        else:
            hits, support = (engine.retrieval.submit((question, k, filters)).result(timeout=600) if engine.retriever
                             else ([], None))
            out.update(support=support, closest=[{"doc_id": h.get("doc_id"), "score": h.get("score")} for h in hits])
            prompt_hits = _screen_passages(hits, cfg, decisions)
            if engine.retriever and cfg.not_found and (support is None or support < threshold):
                _not_found(out, support, threshold, where, decisions)
            else:
                ctx = format_context(prompt_hits, data.context_chars) if prompt_hits else None
                future = engine.batcher.submit(build_messages(question, "", ctx, data.system_prompt)[:-1])
                done()
                checked = g.screen_answer(future.result(timeout=600), cfg)
                decisions += checked["decisions"]
                out.update(answer=checked["answer"], blocked=checked["blocked"],
                           sources=[] if checked["blocked"] else source_list(prompt_hits))
                if svc.cfg.cache:
                    store_answer(svc.ws, key, {"question": logged_q, "answer": out["answer"], "support": support,
                                               "model": engine.model_version, "index_version": engine.index_state,
                                               "sources": out["sources"], "blocked": out["blocked"]})
        if out["not_found"]:
            svc.metrics.not_found.inc()
        out.update(guardrails=decisions, question=logged_q, pii=pii)
        return out
    finally:
        done()
        engine.leave()


def _screen_passages(hits: list[dict[str, Any]], cfg: Any, decisions: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Flag retrieved passages that match injection patterns; the passages that go into the prompt."""
    if not cfg.prompt_injection:
        return hits
    for i, h in enumerate(hits, start=1):
        found = g.find_injection(str(h.get("text", "")))
        if found:
            act = "drop" if cfg.drop_injected_passages else "flag"
            decisions.append(decision("prompt_injection", act, f"passage {i} ({h['doc_id']}): {', '.join(found)}"))
            h["flagged"] = found
    return [h for h in hits if not h.get("flagged")] if cfg.drop_injected_passages else hits


def log_record(request_id: str, started: float, out: dict[str, Any], status: int, who: Identity | None = None,
               k: int | None = None, filters: dict[str, Any] | None = None, endpoint: str = "ask") -> dict[str, Any]:
    """One line of the request log: every request ends as one, refused or answered."""
    return {"request_id": request_id, "at": now_iso(), "endpoint": endpoint,
            "client": who.client if who else None, "role": who.role if who else None,
            "question": out.get("question"), "pii": out.get("pii", {}),
            "k": k, "filters": filters or {}, "status": status, "answer": out.get("answer"),
            "sources": [{x: s.get(x) for x in ("doc_id", "source_uri", "title", "section", "score")}
                        for s in public_sources(out.get("sources", []))], "closest": out.get("closest", []),
            "support": out.get("support"), "not_found": out.get("not_found", False),
            "blocked": out.get("blocked", False), "model": out.get("model"), "index_version": out.get("index_version"),
            "latency_ms": round((time.perf_counter() - started) * 1000, 2), "cached": out.get("cached", False),
            "guardrails": out.get("guardrails", [])}


def refusal_record(request_id: str, started: float, exc: GuardrailError, who: Identity | None,
                   question: str | None, endpoint: str) -> dict[str, Any]:
    return log_record(request_id, started, {"question": question, "guardrails": [
        decision(exc.check, "reject", str(exc))]}, exc.status, who, endpoint=endpoint)


def new_id() -> str:
    return uuid.uuid4().hex
