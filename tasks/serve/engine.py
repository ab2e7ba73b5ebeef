"""What the server keeps loaded: the served index (a private copy of the collection when the engine is embedded,
so index builds in other processes never wait for the server), the champion on its base model, and a batcher that
generates the answers of concurrent questions together. `Server` watches the aliases and swaps both atomically."""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.core.workspace import Workspace, atomic_write_json, new_run_id
from tasks.index.config import RerankConfig
from tasks.index.embed import embed_texts
from tasks.index.qdrant import QdrantBusyError, local_engine, open_client, open_local
from tasks.index.rerank import candidate_depth, load_reranker, pin_reranker, rerank, reranker_id
from tasks.index.search import build_filter, search_collection
from tasks.index.served import describe, served_state
from tasks.serve.ask import serving_model
from tasks.serve.config import ServeConfig
from tasks.serve.requestlog import owner_alive
from tasks.train.generate import generate_shrinking, load_systems
from tasks.train.model import resolve_base_model

log = logging.getLogger("ragtune.serve")


class NotReadyError(RuntimeError):
    """The server has nothing loaded yet (no index served, the model still loading)."""


def desired_state(ws: Workspace, cfg: ServeConfig) -> dict[str, Any]:
    """What should be served now: the champion (or base model), the served index's state and the reranker (the
    folder `trained` points at now). File reads only."""
    model = serving_model(ws)
    rag = model["data"].rag_context
    collection, state = served_state(ws, cfg.index_name) if rag else (None, None)
    return {**model, "collection": collection, "index_state": state,
            "reranker": reranker_id(model["data"].rerank, ws) if rag else None}


class Retriever:
    """Hybrid search plus the support score (cosine of the question and the closest passage) on one
    collection, then optional cross-encoder reranking (`rerank`; `trained` is pinned to its folder for the
    retriever's life).
    With the embedded engine the collection is copied under `serve/snapshots/` while the engine's lock is held,
    then searched there: a later build or in-place update changes the original, never this copy."""

    def __init__(self, ws: Workspace, index_name: str, collection: str, snapshot_root: Path | None = None,
                 rerank: RerankConfig | None = None) -> None:
        self.ws = ws
        self.rerank = pin_reranker(rerank or RerankConfig(), ws)
        if self.rerank.enabled:  # load it now: a bad model fails the engine's load, not the first request
            load_reranker(str(self.rerank.model), self.rerank.max_length, ws)
        self.collection = collection
        self.snapshot: Path | None = None
        index = describe(ws, index_name, collection)
        self.index_version = index.index_version
        self.icfg = index.config
        if os.environ.get("QDRANT_URL") or snapshot_root is None:
            self.client = open_client(ws)
        else:
            self.snapshot = snapshot_root / f"{new_run_id()}-{os.getpid()}"
            self.client = open_local(self.snapshot, engine=copy_collection(ws, collection, self.snapshot))
        self._lock = threading.Lock()  # fast tokenizers and the embedded engine are not safe across threads

    def search(self, question: str, k: int, filters: dict[str, Any] | None = None,
               ) -> tuple[list[dict[str, Any]], float | None]:
        """(top-k hybrid hits, support): support is None when nothing was found."""
        return self.search_many([(question, k, filters)])[0]

    def search_many(self, queries: list[tuple[str, int, dict[str, Any] | None]],
                    ) -> list[tuple[list[dict[str, Any]], float | None]]:
        """`search` for several (question, k, filters) at once: the questions are embedded in one forward
        pass; with reranking on, all questions' `max(k, candidates)` hits are scored in one reranker call."""
        out = []
        with self._lock:
            vectors = embed_texts([q for q, _, _ in queries], self.icfg.embedding_model)
            for (question, k, filters), v in zip(queries, vectors, strict=True):
                vec = v.tolist()
                hits = search_collection(self.client, self.collection, question, self.icfg,
                                         candidate_depth(k, self.rerank), "hybrid", filters, dense_vector=vec)
                top = self.client.query_points(self.collection, query=vec, using="dense", limit=1,
                                               query_filter=build_filter(filters), with_payload=False).points
                out.append((hits, float(top[0].score) if top else None))
        if self.rerank.enabled and queries:
            ranked = rerank([q for q, _, _ in queries], [h for h, _ in out], max(k for _, k, _ in queries),
                            self.rerank, self.ws)
            out = [(r[:k], support) for r, (_, k, _), (_, support) in zip(ranked, queries, out, strict=True)]
        return out

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.snapshot is not None:
                shutil.rmtree(self.snapshot, ignore_errors=True)


def copy_collection(ws: Workspace, collection: str, dest: Path) -> str:
    """Copy one collection of the embedded engine (and an alias file naming it) to `dest`, holding the engine's
    lock so the copy is consistent; waits for a build in progress to finish. Returns the engine name."""
    engine = local_engine()
    deadline = time.monotonic() + 3600
    while True:
        try:
            client = open_local(ws.qdrant, engine=engine, wait_s=30)
            break
        except QdrantBusyError:  # an index build holds it: keep serving the old copy and try again
            if time.monotonic() > deadline:
                raise
            log.info("waiting for the index build that holds %s", ws.qdrant)
    try:
        if engine == "edge":
            shutil.copytree(ws.qdrant / "edge" / "collections" / collection, dest / "edge" / "collections" / collection,
                            ignore=shutil.ignore_patterns(".lock"))
            atomic_write_json(dest / "edge" / "aliases.json", {})
        else:
            shutil.copytree(ws.qdrant, dest, ignore=shutil.ignore_patterns(".lock", "edge"), dirs_exist_ok=True)
    finally:
        client.close()
    return engine


@dataclass
class _Job:
    item: Any
    future: Future = field(default_factory=Future)


class Batcher:
    """One thread that runs `fn` on queued items in batches: the first item waits up to `window_ms` for others, and
    up to `max_batch` items go through one call. The server has two: retrieval (the questions embedded in one
    forward pass) and generation (one padded `generate` call, greedy decoding as evaluation does)."""

    def __init__(self, fn: Any, window_ms: float, max_batch: int, on_batch: Any = None, name: str = "batcher",
                 coming: Any = None, max_wait_ms: float = 0.0) -> None:
        """`coming()`: how many items are on their way (requests still retrieving); while there are some, a
        batch waits for them up to `max_wait_ms` instead of `window_ms`, so the requests that a batch's answers
        set free again are not split into a small batch and a late one."""
        self.fn, self.window_s, self.max_batch, self.on_batch = fn, window_ms / 1000, max_batch, on_batch
        self.coming, self.max_wait_s = coming, max(max_wait_ms, window_ms) / 1000
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"ragtune-{name}", daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> Future:
        job = _Job(item)
        self._queue.put(job)
        return job.future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            start = time.monotonic()
            while len(jobs) < self.max_batch:
                waiting = self.coming is not None and self.coming() > 0
                left = start + (self.max_wait_s if waiting else self.window_s) - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=min(left, 0.005)) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    if left > 0:
                        continue  # look at `coming` again
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                jobs.append(nxt)
            try:
                results = self.fn([j.item for j in jobs])
            except Exception as exc:  # every waiting request learns why, none hangs
                for j in jobs:
                    j.future.set_exception(exc)
                continue
            if self.on_batch:
                self.on_batch(len(jobs))
            for j, r in zip(jobs, results, strict=True):
                j.future.set_result(r)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)


def generator(llm: Any, tokenizer: Any, max_new_tokens: int) -> Any:
    """The generation batch function: chat prompts in, greedy answers out (rows leave the batch as they end)."""
    return lambda prompts: generate_shrinking(llm, tokenizer, prompts, max_new_tokens)


class Engine:
    """One loaded (model version, index state): retrieval, prompt settings, model and batcher. Requests count
    themselves in and out, so a retired engine is closed only after its last request."""

    def __init__(self, ws: Workspace, cfg: ServeConfig, state: dict[str, Any], on_batch: Any = None) -> None:
        self.model_version = state["version"]
        self.index_state = state["index_state"]
        data = state["data"]  # `trained` pinned: the prompts and the cache keys name the reranker that ran
        rerank = pin_reranker(data.rerank, ws) if data.rag_context else data.rerank
        self.data = data.model_copy(update={"index_name": cfg.index_name, "rerank": rerank})
        self.reranker = reranker_id(self.data.rerank, ws) if data.rag_context else None
        self.retriever = (Retriever(ws, cfg.index_name, state["collection"], ws.root / "serve" / "snapshots",
                                    self.data.rerank) if state["collection"] else None)
        try:
            adapters = {"champion": state["adapter_dir"]} if state["adapter_dir"] else {}
            self.llm, self.tokenizer = load_systems(resolve_base_model(ws, state["base_model"]), adapters)
            if adapters:  # one adapter per engine: fold it into the weights (no LoRA matmuls per token)
                self.llm = self.llm.merge_and_unload()
        except BaseException:
            if self.retriever:
                self.retriever.close()
            raise
        self.upstream = 0  # requests of this engine that may still submit a prompt (retrieving, checking)
        self.batcher = Batcher(generator(self.llm, self.tokenizer, cfg.max_new_tokens), cfg.batch_window_ms,
                               cfg.max_batch, on_batch, "generate", coming=lambda: self.upstream,
                               max_wait_ms=cfg.batch_max_wait_ms)
        self.retrieval = (Batcher(self.retriever.search_many, cfg.batch_window_ms, cfg.max_batch, name="retrieve")
                          if self.retriever else None)
        self.loaded_at = time.time()
        self._inflight = 0
        self._cond = threading.Condition()

    def key(self) -> tuple[str, str | None, str | None]:
        return self.model_version, self.index_state, self.reranker

    def enter(self) -> None:
        with self._cond:
            self._inflight += 1
            self.upstream += 1

    def submitted(self) -> None:
        """The request no longer heads for generation (its prompt is queued, or it was answered without one)."""
        with self._cond:
            self.upstream -= 1

    def leave(self) -> None:
        with self._cond:
            self._inflight -= 1
            self._cond.notify_all()

    def close(self, timeout_s: float = 300) -> None:
        """Wait for the requests still using this engine, then release the model, the batcher and the copy."""
        with self._cond:
            self._cond.wait_for(lambda: self._inflight == 0, timeout=timeout_s)
        self.batcher.close()
        if self.retriever:
            self.retrieval.close()
            self.retriever.close()
        self.llm = self.tokenizer = None


class Server:
    """The engine being served, swapped atomically by a watcher thread when the champion or the index moves."""

    def __init__(self, ws: Workspace, cfg: ServeConfig, on_swap: Any = None, on_batch: Any = None) -> None:
        self.ws, self.cfg = ws, cfg
        self.engine: Engine | None = None
        self.error: str | None = "loading"
        self.swaps = 0
        self.on_swap, self.on_batch = on_swap, on_batch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ragtune-watch", daemon=True)

    def start(self) -> None:
        folder = self.ws.root / "serve" / "snapshots"
        for p in folder.iterdir() if folder.is_dir() else []:  # copies left by a server that was killed
            if not owner_alive(p):
                shutil.rmtree(p, ignore_errors=True)
        self._thread.start()

    def acquire(self) -> Engine:
        """The current engine, counted in (call `leave` on it when done)."""
        engine = self.engine
        if engine is None:
            raise NotReadyError(self.error or "loading")
        engine.enter()
        return engine

    def check(self) -> bool:
        """Load what should be served if it differs from what is; True when a swap happened."""
        try:
            want = desired_state(self.ws, self.cfg)
        except Exception as exc:  # a registry or alias file being replaced: try again next tick
            log.warning("cannot read what to serve: %s", exc)
            return False
        if want["data"].rag_context and want["collection"] is None:
            if self.engine is None:
                self.error = f"no index named {self.cfg.index_name!r} is served: run `ragtune index`"
            return False
        wanted = (want["version"], want["index_state"], want["reranker"])
        if self.engine is not None and self.engine.key() == wanted:
            return False
        t = time.perf_counter()
        try:
            new = Engine(self.ws, self.cfg, want, self.on_batch)
        except Exception as exc:
            log.exception("loading %s / %s failed; still serving the previous one", want["version"], want["index_state"])
            if self.engine is None:
                self.error = f"loading failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            return False
        old, self.engine = self.engine, new  # one reference assignment: the swap
        self.error = None
        self.swaps += old is not None
        log.info("serving model %s with index %s (loaded in %.1f s)", new.model_version, new.index_state,
                 time.perf_counter() - t)
        if self.on_swap:
            self.on_swap(old, new)
        if old is not None:
            threading.Thread(target=old.close, name="ragtune-retire", daemon=True).start()
        return True

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self.cfg.reload_interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        if self.engine is not None:
            self.engine.close(timeout_s=30)
            self.engine = None

