"""The ASGI app of `ragtune serve`: /v1/ask, /v1/feedback, /healthz, /readyz, /metrics and the chat page at /.
Bodies are read and checked by hand so that every bad input gets a 4xx with a one-line reason; each request ends
as one line of the request log (refusals with no answer)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from collections import OrderedDict
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Request  # module level: FastAPI reads the endpoints' annotations from this namespace

from tasks.core.workspace import Workspace, atomic_write_json, read_json
from tasks.serve import guardrails as g
from tasks.serve.ask import cache_key, cache_path, source_list
from tasks.serve.config import BLOCKED_ANSWER, NOT_FOUND_ANSWER, AskConfig, ServeConfig
from tasks.serve.engine import NotReadyError, Server
from tasks.serve.guardrails import (
    GuardrailError,
    ask_arguments,
    check_question,
    decision,
    feedback_fields,
    read_body,
    redact,
)
from tasks.serve.metrics import Metrics
from tasks.serve.requestlog import FEEDBACK, REQUESTS, SegmentWriter, find_request, now_iso
from tasks.train.prompt import build_messages, format_context

log = logging.getLogger("ragtune.serve")
PAGE = Path(__file__).with_name("chat.html")


class Service:
    """Everything one server process holds: settings, the engine watcher, the logs and the metrics."""

    def __init__(self, ws: Workspace, cfg: ServeConfig) -> None:
        self.ws, self.cfg, self.started = ws, cfg, time.time()
        self.metrics = Metrics()
        self.server = Server(ws, cfg, on_swap=self._swapped, on_batch=self.metrics.batch.observe)
        self.requests = SegmentWriter(ws, REQUESTS, cfg.segment_max_records)
        self.feedback = SegmentWriter(ws, FEEDBACK, cfg.segment_max_records)
        self.recent: OrderedDict[str, dict[str, Any]] = OrderedDict()  # request id -> logged record

    def _swapped(self, old: Any, new: Any) -> None:
        if old is not None:
            # 0, not removed: a removed label lingers in multiprocess mode's files, and a 0 says "was served"
            self.metrics.served.labels(old.model_version, str(old.index_state)).set(0)
            self.metrics.swaps.inc()
        self.metrics.served.labels(new.model_version, str(new.index_state)).set(1)

    def remember(self, record: dict[str, Any]) -> None:
        self.requests.append(record)
        self.recent[record["request_id"]] = record
        while len(self.recent) > 10_000:
            self.recent.popitem(last=False)

    def lookup(self, request_id: str) -> dict[str, Any] | None:
        return self.recent.get(request_id) or find_request(self.ws, request_id)

    def count(self, decisions: list[dict[str, str]]) -> None:
        for d in decisions:
            self.metrics.guardrails.labels(d["check"], d["action"]).inc()


def answer(svc: Service, question: str, k: int | None, filters: dict[str, Any] | None) -> dict[str, Any]:
    """Retrieve, check, generate (batched) and log one question; blocking (runs in a worker thread)."""
    cfg = svc.cfg.guardrails
    decisions: list[dict[str, str]] = []
    logged_q, pii = g.redact(question, cfg)
    if pii:
        decisions.append(decision("pii", "redact", ", ".join(f"{k_} {n}" for k_, n in sorted(pii.items()))))
    found = g.find_injection(question) if cfg.prompt_injection else []
    if found:
        if cfg.block_injection_questions:
            raise GuardrailError("prompt_injection", f"the question matches prompt-injection patterns: {', '.join(found)}")
        decisions.append(decision("prompt_injection", "flag", f"question: {', '.join(found)}"))
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
        hit = read_json(cache_path(svc.ws, key), default=None) if svc.cfg.cache else None
        out: dict[str, Any] = {"model": engine.model_version, "index_version": engine.index_state, "cached": False,
                               "not_found": False, "blocked": False, "support": None}
        if hit:
            svc.metrics.cache_hits.inc()
            out.update(answer=hit["answer"], sources=hit["sources"], cached=True, support=hit.get("support"))
        else:
            hits, support = (engine.retrieval.submit((question, k, filters)).result(timeout=600) if engine.retriever
                             else ([], None))
            out["support"] = support
            threshold, where = g.support_threshold(svc.ws, cfg)
            prompt_hits = hits
            if cfg.prompt_injection:
                flagged = [(i, g.find_injection(str(h.get("text", "")))) for i, h in enumerate(hits, start=1)]
                flagged = [(i, f) for i, f in flagged if f]
                for i, f in flagged:
                    act = "drop" if cfg.drop_injected_passages else "flag"
                    decisions.append(decision("prompt_injection", act, f"passage {i} ({hits[i - 1]['doc_id']}): "
                                              f"{', '.join(f)}"))
                    hits[i - 1]["flagged"] = f
                if cfg.drop_injected_passages:
                    prompt_hits = [h for h in hits if not h.get("flagged")]
            if engine.retriever and cfg.not_found and (support is None or support < threshold):
                decisions.append(decision("not_found", "refuse", f"support {support if support is None else round(support, 3)}"
                                          f" < {threshold:.3f} ({where})"))
                out.update(answer=NOT_FOUND_ANSWER, sources=source_list(hits), not_found=True)
            else:
                ctx = format_context(prompt_hits, data.context_chars) if prompt_hits else None
                prompt = build_messages(question, "", ctx, data.system_prompt)[:-1]
                future = engine.batcher.submit(prompt)
                done()
                text = future.result(timeout=600)
                out.update(answer=text, sources=source_list(prompt_hits))
                if svc.cfg.cache:
                    atomic_write_json(cache_path(svc.ws, key), {"question": logged_q, "answer": text,
                                                                "model": engine.model_version, "support": support,
                                                                "index_version": engine.index_state,
                                                                "sources": out["sources"]})
        terms = g.blocked_terms(out["answer"], cfg)
        if terms:
            decisions.append(decision("blocklist", "withhold", f"{len(terms)} blocklist term(s) in the answer"))
            out.update(answer=BLOCKED_ANSWER, blocked=True)
        if out["not_found"]:
            svc.metrics.not_found.inc()
        out.update(guardrails=decisions, question=logged_q, pii=pii)
        return out
    finally:
        done()
        engine.leave()


def log_record(request_id: str, started: float, out: dict[str, Any], status: int, k: int | None = None,
               filters: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"request_id": request_id, "at": now_iso(), "question": out.get("question"), "pii": out.get("pii", {}),
            "k": k, "filters": filters or {}, "status": status, "answer": out.get("answer"),
            "sources": [{x: s.get(x) for x in ("doc_id", "source_uri", "title", "section", "score")}
                        for s in out.get("sources", [])],
            "support": out.get("support"), "not_found": out.get("not_found", False),
            "blocked": out.get("blocked", False), "model": out.get("model"), "index_version": out.get("index_version"),
            "latency_ms": round((time.perf_counter() - started) * 1000, 2), "cached": out.get("cached", False),
            "guardrails": out.get("guardrails", [])}


def create_app(ws: Workspace | None = None, cfg: ServeConfig | None = None) -> Any:
    """The FastAPI app; the engine starts loading in the background when the app starts."""

    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    ws = ws or Workspace.from_env()
    cfg = cfg or ServeConfig()
    svc = Service(ws, cfg)

    @asynccontextmanager
    async def lifespan(app: Any):
        svc.server.start()
        yield
        svc.server.stop()
        svc.requests.close()
        svc.feedback.close()

    app = FastAPI(title="ragtune", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.service = svc

    def refuse(endpoint: str, exc: GuardrailError, started: float, log_it: dict[str, Any] | None = None) -> Any:
        svc.count([decision(exc.check, "reject", str(exc))])
        svc.metrics.requests.labels(endpoint, str(exc.status)).inc()
        if log_it is not None:  # a refused question is logged (redacted, cut short) with no answer
            svc.remember(log_record(log_it["request_id"], started, {
                "question": log_it.get("question"), "guardrails": [decision(exc.check, "reject", str(exc))]},
                exc.status))
        return JSONResponse({"error": str(exc), "check": exc.check}, status_code=exc.status)

    @app.post("/v1/ask")
    async def ask(request: Request) -> Any:
        from starlette.concurrency import run_in_threadpool

        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        try:
            body = await read_body(request, cfg.guardrails.max_body_bytes)
        except GuardrailError as exc:
            return refuse("ask", exc, started, {"request_id": request_id})
        q = body.get("question")
        short = (svc_redact(q[:200], cfg) if isinstance(q, str) else None)
        try:
            k, filters = ask_arguments(body)
            question = check_question(q, cfg.guardrails)
            out = await run_in_threadpool(answer, svc, question, k, filters)
        except GuardrailError as exc:
            return refuse("ask", exc, started, {"request_id": request_id, "question": short})
        except NotReadyError as exc:
            svc.metrics.requests.labels("ask", "503").inc()
            svc.remember(log_record(request_id, started, {"question": short, "guardrails": [
                decision("not_ready", "refuse", str(exc))]}, 503))  # every request ends as one line of the log
            return JSONResponse({"error": f"not ready: {exc}", "request_id": request_id}, status_code=503,
                                headers={"Retry-After": "5"})
        except Exception as exc:
            log.exception("ask %s failed", request_id)
            svc.metrics.requests.labels("ask", "500").inc()
            svc.remember(log_record(request_id, started, {"question": short, "guardrails": [
                decision("internal_error", "refuse", type(exc).__name__)]}, 500))
            return JSONResponse({"error": f"internal error: {type(exc).__name__}", "request_id": request_id},
                                status_code=500)
        svc.count(out["guardrails"])
        rec = log_record(request_id, started, out, 200, k, filters)
        svc.remember(rec)
        svc.metrics.requests.labels("ask", "200").inc()
        svc.metrics.latency.labels("ask").observe(time.perf_counter() - started)
        return {"answer": out["answer"], "sources": out["sources"], "model": out["model"],
                "index_version": out["index_version"], "request_id": request_id, "cached": out["cached"],
                "latency_ms": rec["latency_ms"], "not_found": out["not_found"], "blocked": out["blocked"],
                "support": out["support"], "guardrails": out["guardrails"]}

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Any:
        started = time.perf_counter()
        body: dict[str, Any] = {}

        def kept(reason: str) -> None:
            """A refused feedback body still ends in the inbox, marked, so review gives it a fate (quarantined)."""
            rid, rating = body.get("request_id"), body.get("rating")
            svc.feedback.append({"feedback_id": uuid.uuid4().hex, "at": now_iso(), "refused": reason,
                                 "request_id": rid if isinstance(rid, str) else None,
                                 "rating": rating if isinstance(rating, str) else None})

        try:
            body = await read_body(request, cfg.guardrails.max_body_bytes)
            fields = feedback_fields(body)
        except GuardrailError as exc:
            kept(str(exc))
            return refuse("feedback", exc, started)
        from starlette.concurrency import run_in_threadpool

        rec = await run_in_threadpool(svc.lookup, fields["request_id"])
        if rec is None:
            svc.metrics.requests.labels("feedback", "404").inc()
            kept("unknown request id")
            return JSONResponse({"error": f"no request with id {fields['request_id']!r} was logged"}, status_code=404)
        if rec.get("status") != 200 or rec.get("answer") is None:
            svc.metrics.requests.labels("feedback", "409").inc()
            kept("the request was refused: no answer to rate")
            return JSONResponse({"error": f"request {fields['request_id']!r} was refused: there is no answer to rate"},
                                status_code=409)
        item = {"feedback_id": uuid.uuid4().hex, "request_id": fields["request_id"], "at": now_iso(),
                "rating": fields["rating"], "correction": svc_redact(fields.get("correction"), cfg),
                "comment": svc_redact(fields.get("comment"), cfg)}
        svc.feedback.append(item)
        svc.metrics.feedback.labels(fields["rating"]).inc()
        svc.metrics.requests.labels("feedback", "200").inc()
        svc.metrics.latency.labels("feedback").observe(time.perf_counter() - started)
        return {"feedback_id": item["feedback_id"], "request_id": item["request_id"], "status": "recorded"}

    @app.get("/healthz")
    async def healthz() -> Any:
        return {"status": "ok", "pid": os.getpid(), "uptime_s": round(time.time() - svc.started, 1)}

    @app.get("/readyz")
    async def readyz() -> Any:
        e = svc.server.engine
        if e is None:
            return JSONResponse({"ready": False, "reason": svc.server.error}, status_code=503)
        return {"ready": True, "model": e.model_version, "index_version": e.index_state,
                "collection": e.retriever.collection if e.retriever else None, "swaps": svc.server.swaps,
                "loaded_at": e.loaded_at}

    @app.get("/metrics")
    async def metrics() -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(svc.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> Any:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    return app


def svc_redact(text: str | None, cfg: ServeConfig) -> str | None:
    return redact(text, cfg.guardrails)[0]


def app_from_env() -> Any:
    """App factory for `uvicorn --factory` worker processes: settings from RAGTUNE_SERVE_CONFIG (JSON)."""
    raw = os.environ.get("RAGTUNE_SERVE_CONFIG")
    return create_app(Workspace.from_env(), ServeConfig.model_validate_json(raw) if raw else ServeConfig())


def run(cfg: ServeConfig, ws: Workspace | None = None) -> None:
    """Serve until interrupted (uvicorn; several worker processes with `cfg.workers`)."""

    import uvicorn

    ws = ws or Workspace.from_env()
    os.environ["RAGTUNE_HOME"] = str(ws.root)
    os.environ["RAGTUNE_SERVE_CONFIG"] = cfg.model_dump_json()
    made = None
    if cfg.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        made = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ragtune-metrics-")
    try:
        uvicorn.run("tasks.serve.app:app_from_env", factory=True, host=cfg.host, port=cfg.port, workers=cfg.workers,
                    log_level="info", access_log=False, timeout_graceful_shutdown=30)
    finally:
        if made:  # the metric files of this server's workers; a new server starts from zero
            shutil.rmtree(made, ignore_errors=True)

