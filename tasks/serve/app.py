"""The ASGI app of `ragtune serve`: /v1/ask, /v1/feedback, /v1/whoami, /healthz, /readyz, /metrics and the chat page
at /. Every request passes the gate (identity, role, CSRF, rate limit) and is read by hand so that a bad one gets
a 4xx with a one-line reason; anything unexpected becomes a JSON 500 with a traceback in the server log. Each
request ends as one line of the request log."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import Request  # module level: FastAPI reads the endpoints' annotations from this namespace

from tasks.core.workspace import Workspace
from tasks.serve import api
from tasks.serve.access import Identity, check_exposure
from tasks.serve.config import ServeConfig
from tasks.serve.engine import NotReadyError
from tasks.serve.guardrails import GuardrailError, decision, redact, screen_question
from tasks.serve.inputs import ask_arguments, feedback_fields, read_body
from tasks.serve.keys import KeyRing
from tasks.serve.requestlog import now_iso
from tasks.serve.service import Service, answer, log_record, new_id, public_sources, refusal_record

log = logging.getLogger("ragtune.serve")
PAGE = Path(__file__).with_name("chat.html")


class CatchAll:
    """Outermost app code: names each request (`request.state.request_id`, the X-Request-ID header) and turns an
    exception nothing else handled into a JSON 500, a request-log line and a traceback in the server log."""

    def __init__(self, app: Any, svc: Service) -> None:
        self.app, self.svc = app, svc

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, started, sent = new_id(), time.perf_counter(), False
        scope.setdefault("state", {})["request_id"] = request_id

        async def sending(message: dict[str, Any]) -> None:
            nonlocal sent
            if message["type"] == "http.response.start":
                sent = True
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            endpoint = scope.get("path", "").rsplit("/", 1)[-1] or "page"
            log.exception("%s %s (request %s) failed", scope.get("method"), scope.get("path"), request_id)
            self.svc.metrics.requests.labels(endpoint, "500").inc()
            try:
                self.svc.remember(log_record(request_id, started, {"guardrails": [
                    decision("internal_error", "refuse", type(exc).__name__)]}, 500, scope["state"].get("who"),
                    endpoint=endpoint))
            except Exception:
                log.exception("could not log request %s", request_id)
            if not sent:
                body = json.dumps({"error": f"internal error: {type(exc).__name__}", "check": "internal_error",
                                   "request_id": request_id}).encode()
                await send({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", request_id.encode())]})
                await send({"type": "http.response.body", "body": body})


def create_app(ws: Workspace | None = None, cfg: ServeConfig | None = None) -> Any:
    """The FastAPI app; the engine starts loading in the background when the app starts."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

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
    app.add_middleware(CatchAll, svc=svc)

    async def refuse(request: Request, endpoint: str, exc: GuardrailError, started: float,
                     question: str | None = None) -> Any:
        rid, who = request.state.request_id, getattr(request.state, "who", None)
        if exc.status == 429 and not exc.logged:
            # a client that goes on after its 429 waits for each further one: a flood costs it time, and the
            # server an idle coroutine instead of a request per millisecond
            await anyio.sleep(cfg.limits.tarpit_s)
        svc.count([decision(exc.check, "reject", str(exc))])
        svc.metrics.requests.labels(endpoint, str(exc.status)).inc()
        if exc.logged:  # refused: logged with no answer (a flood's repeats only in the metrics)
            svc.remember(refusal_record(rid, started, exc, who, question, endpoint))
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="ragtune"'
        return JSONResponse({"error": str(exc), "check": exc.check, "request_id": rid}, status_code=exc.status,
                            headers=headers)

    def admit(request: Request, role: str, endpoint: str | None = None) -> Identity:
        """The gate, in order: who (401), may they (403), CSRF (415, 403), how often (429)."""
        who = svc.gate.identify(request.headers, request.client.host if request.client else None)
        request.state.who = who
        svc.gate.require(who, role)
        if endpoint:
            svc.gate.check_post(request.headers)
            svc.gate.limit(endpoint, who)
        return who

    @app.post("/v1/ask", **api.ASK)
    async def ask(request: Request) -> Any:
        started, short = time.perf_counter(), None
        try:
            admit(request, "ask", "ask")
            body = await read_body(request, cfg.guardrails, cfg.limits.body_timeout_s)
            q = body.get("question")
            short = redact(q[:200], cfg.guardrails)[0] if isinstance(q, str) else None
            k, filters = ask_arguments(body, cfg.guardrails)
            question, decisions = screen_question(q, cfg.guardrails)
            svc.admission.enter()
        except GuardrailError as exc:
            return await refuse(request, "ask", exc, started, short)
        try:
            out = await run_in_threadpool(answer, svc, question, k, filters, decisions)
        except NotReadyError as exc:
            not_ready = GuardrailError("not_ready", f"not ready: {exc}", 503, retry_after=5)
            return await refuse(request, "ask", not_ready, started, short)
        finally:
            svc.admission.leave(time.perf_counter() - started)
        svc.count(out["guardrails"])
        rec = log_record(request.state.request_id, started, out, 200, request.state.who, k, filters)
        svc.remember(rec)
        svc.metrics.requests.labels("ask", "200").inc()
        svc.metrics.latency.labels("ask").observe(time.perf_counter() - started)
        return {"answer": out["answer"], "sources": public_sources(out["sources"]), "model": out["model"],
                "index_version": out["index_version"], "request_id": request.state.request_id,
                "cached": out["cached"], "latency_ms": rec["latency_ms"], "not_found": out["not_found"],
                "blocked": out["blocked"], "support": out["support"], "guardrails": out["guardrails"]}

    @app.post("/v1/feedback", **api.FEEDBACK)
    async def feedback(request: Request) -> Any:
        started = time.perf_counter()
        body: dict[str, Any] = {}

        async def kept(exc: GuardrailError) -> Any:
            """A refused feedback body still ends in the inbox, marked, so review gives it a fate (quarantined)."""
            rid, rating = body.get("request_id"), body.get("rating")
            svc.feedback.append({"feedback_id": new_id(), "at": now_iso(), "refused": str(exc),
                                 "request_id": rid if isinstance(rid, str) else None,
                                 "rating": rating if isinstance(rating, str) else None,
                                 "client": request.state.who.client, "counted": False})
            return await refuse(request, "feedback", exc, started)

        try:
            who = admit(request, "feedback", "feedback")
        except GuardrailError as exc:  # not feedback at all: the request log has it, the inbox does not
            return await refuse(request, "feedback", exc, started)
        try:
            body = await read_body(request, cfg.guardrails, cfg.limits.body_timeout_s)
            fields = feedback_fields(body)
        except GuardrailError as exc:
            return await kept(exc)
        rid = fields["request_id"]
        rec = await run_in_threadpool(svc.lookup, rid)
        if rec is None:
            return await kept(GuardrailError("unknown_request", f"no request with id {rid!r} was logged", 404))
        if rec.get("client") != who.client:  # a vote belongs to the client that received the answer
            return await refuse(request, "feedback", GuardrailError(
                "not_your_request", f"request {rid!r} was answered to another client: only it may rate the answer",
                403), started)
        if rec.get("status") != 200 or rec.get("answer") is None:
            return await kept(GuardrailError("refused_request", f"request {rid!r} was refused: there is no answer "
                                             "to rate", 409))
        replaces = await run_in_threadpool(svc.previous_vote, rid, who.client)
        item = {"feedback_id": new_id(), "request_id": rid, "at": now_iso(), "rating": fields["rating"],
                "correction": redact(fields.get("correction"), cfg.guardrails)[0],
                "comment": redact(fields.get("comment"), cfg.guardrails)[0], "client": who.client,
                "counted": who.counted, "replaces": replaces}
        svc.record_vote(item)
        svc.metrics.feedback.labels(fields["rating"]).inc()
        svc.metrics.requests.labels("feedback", "200").inc()
        svc.metrics.latency.labels("feedback").observe(time.perf_counter() - started)
        return {"feedback_id": item["feedback_id"], "request_id": rid, "status": "recorded", "replaces": replaces}

    @app.get("/v1/whoami", **api.WHOAMI)
    async def whoami(request: Request) -> Any:
        try:
            who = admit(request, "ask")
        except GuardrailError as exc:
            return await refuse(request, "whoami", exc, time.perf_counter())
        return {"client": who.client, "role": who.role, "anonymous": who.anonymous, "counted": who.counted}

    @app.get("/healthz")
    async def healthz() -> Any:
        return {"status": "ok", "pid": os.getpid(), "uptime_s": round(time.time() - svc.started, 1)}

    @app.get("/readyz", responses={503: {"description": "Not ready: the reason is in `reason`"}})
    async def readyz() -> Any:
        e = svc.server.engine
        if e is None:
            return JSONResponse({"ready": False, "reason": svc.server.error}, status_code=503)
        return {"ready": True, "model": e.model_version, "index_version": e.index_state,
                "collection": e.retriever.collection if e.retriever else None, "swaps": svc.server.swaps,
                "loaded_at": e.loaded_at}

    @app.get("/metrics", **api.METRICS)
    async def metrics(request: Request) -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST

        try:
            admit(request, "admin")
        except GuardrailError as exc:
            return await refuse(request, "metrics", exc, time.perf_counter())
        return Response(svc.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> Any:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    return app


def app_from_env() -> Any:
    """App factory for `uvicorn --factory` worker processes: settings from RAGTUNE_SERVE_CONFIG (JSON)."""
    raw = os.environ.get("RAGTUNE_SERVE_CONFIG")
    return create_app(Workspace.from_env(), ServeConfig.model_validate_json(raw) if raw else ServeConfig())


def run(cfg: ServeConfig, ws: Workspace | None = None) -> None:
    """Serve until interrupted (uvicorn with the deadlines of `protocol`; several worker processes with
    `cfg.workers`). Refuses to listen beyond loopback with no way to tell clients apart (`check_exposure`)."""

    import uvicorn

    ws = ws or Workspace.from_env()
    check_exposure(cfg, KeyRing.load(ws))
    os.environ["RAGTUNE_HOME"] = str(ws.root)
    os.environ["RAGTUNE_SERVE_CONFIG"] = cfg.model_dump_json()
    made = None
    if cfg.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        made = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ragtune-metrics-")
    lim, proxies = cfg.limits, cfg.auth.forwarded_allow_ips
    try:
        uvicorn.run("tasks.serve.app:app_from_env", factory=True, host=cfg.host, port=cfg.port, workers=cfg.workers,
                    log_level="info", access_log=False, timeout_graceful_shutdown=30,
                    http="tasks.serve.protocol:TimedH11Protocol", limit_concurrency=lim.max_connections,
                    timeout_keep_alive=lim.keep_alive_s, h11_max_incomplete_event_size=lim.max_header_bytes,
                    proxy_headers=proxies is not None, forwarded_allow_ips=proxies, server_header=False)
    finally:
        if made:  # the metric files of this server's workers; a new server starts from zero
            shutil.rmtree(made, ignore_errors=True)
