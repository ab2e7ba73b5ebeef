"""ask: answer a question with the champion adapter (or the base model when there is none) and context retrieved
from the served index, citing the passages it was given. Answers are cached per question, index version and
model version, so a repeated question costs a file read and any change to either misses the cache."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from tasks.core.workspace import Workspace, atomic_write_json, read_json
from tasks.index.rerank import pin_reranker
from tasks.index.served import served_state
from tasks.ingest.pii import redact_pii
from tasks.serve.config import AskConfig, GuardrailConfig
from tasks.serve.guardrails import screen_answer, screen_question
from tasks.train import registry
from tasks.train.config import SFTDataConfig, TrainConfig
from tasks.train.generate import generate, load_systems, use_system
from tasks.train.model import resolve_base_model
from tasks.train.prompt import build_messages, format_context, retrieve_contexts
from tasks.train.sft import normalize_question

CACHE_FORMAT = 2  # 2: sources carry the passage text


def serving_model(ws: Workspace) -> dict[str, Any]:
    """What answers: the champion's version, adapter and prompt settings, or the default base model."""
    champ = registry.resolve(ws, "champion")
    if champ:
        meta = read_json(ws.models / champ["run_id"] / "meta.json", default={}) or {}
        return {"version": champ["version"], "base_model": champ["base_model"], "adapter_dir": champ["adapter_dir"],
                "data": SFTDataConfig.model_validate((meta.get("config") or {}).get("data") or {})}
    default = TrainConfig()
    return {"version": f"base:{default.base_model}", "base_model": default.base_model, "adapter_dir": None,
            "data": default.data}


def cache_key(question: str, index_state: str | None, model_version: str, cfg: AskConfig, data: SFTDataConfig,
              variant: dict[str, Any] | None = None) -> str:
    """`variant`: what else shaped the answer (the server's passage count or filters when not the defaults).
    Reranking is part of the key only when it is on (keys without it stay valid); pin `trained` to its folder
    first (`tasks.index.rerank.pin_reranker`), so that a newly trained reranker misses the cache."""
    blob = {"q": normalize_question(question), "index": index_state, "model": model_version, "format": CACHE_FORMAT,
            "max_new_tokens": cfg.max_new_tokens,
            "prompt": data.model_dump(include={"rag_context", "context_k", "context_chars", "system_prompt"})}
    if data.rag_context and data.rerank.enabled:
        blob["rerank"] = data.rerank.model_dump(include={"model", "candidates", "max_length"})
    if variant:
        blob["variant"] = variant
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def cache_path(ws: Workspace, key: str) -> Path:
    return ws.root / "cache" / "answers" / key[:2] / f"{key}.json"


def source_list(hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The citations of an answer: numbered as in the prompt, with the passage text (and the cross-encoder's
    score when the passages were reranked)."""
    return [{"n": i, "doc_id": h["doc_id"], "source_uri": h["source_uri"], "title": h.get("title"),
             "section": h.get("section"), "score": h.get("score"), "text": h.get("text"),
             **({"rerank_score": h["rerank_score"]} if "rerank_score" in h else {})}
            for i, h in enumerate(hits, start=1)]


def cached_answer(ws: Workspace, key: str, guard: GuardrailConfig) -> dict[str, Any] | None:
    """The cached answer under `key` after the output check (a withheld entry comes back withheld, whoever wrote it
    and whatever the list said then), or None."""
    hit = read_json(cache_path(ws, key), default=None)
    if not isinstance(hit, dict) or not isinstance(hit.get("answer"), str):
        return None
    checked = screen_answer(hit["answer"], guard)
    return {**hit, "answer": checked["answer"], "blocked": checked["blocked"], "guardrails": checked["decisions"]}


def store_answer(ws: Workspace, key: str, record: dict[str, Any]) -> bool:
    """Cache an answer unless it was withheld: the cache is shared by the server and `ragtune ask`, so a withheld
    answer stored here would be one read away from any path that forgot to check it."""
    if record.get("blocked"):
        return False
    atomic_write_json(cache_path(ws, key), {k: v for k, v in record.items() if k not in ("blocked", "guardrails")})
    return True


def ask(ws: Workspace, question: str, cfg: AskConfig, guard: GuardrailConfig | None = None) -> dict[str, Any]:
    """{question, answer, sources, model, index_version, cached, blocked, guardrails, seconds}, through the checks
    the server applies (`guard`: the serve section's guardrails); a refused question raises `GuardrailError`."""
    t = time.perf_counter()
    guard = guard or GuardrailConfig()
    question, decisions = screen_question(question, guard)
    model = serving_model(ws)
    data = model["data"].model_copy(update={"index_name": cfg.index_name})
    if data.rag_context:  # one reranker for the answer and its cache key, whatever is trained meanwhile
        data = data.model_copy(update={"rerank": pin_reranker(data.rerank, ws)})

    collection, index_state = served_state(ws, cfg.index_name) if data.rag_context else (None, None)
    if data.rag_context and collection is None:
        raise FileNotFoundError(f"no index named {cfg.index_name!r} is served in {ws.root}: run `ragtune index` first")
    key = cache_key(question, index_state, model["version"], cfg, data)
    if cfg.cache:
        hit = cached_answer(ws, key, guard)
        if hit:
            return {**hit, "guardrails": decisions + hit["guardrails"], "cached": True,
                    "seconds": time.perf_counter() - t}
    hits: list[dict[str, Any]] = []
    if data.rag_context:
        found, _ = retrieve_contexts(ws, [question], data)
        hits = found[0]
    ctx = format_context(hits, data.context_chars) if hits else None
    prompt = build_messages(question, "", ctx, data.system_prompt)[:-1]
    adapters = {"champion": model["adapter_dir"]} if model["adapter_dir"] else {}
    llm, tokenizer = load_systems(resolve_base_model(ws, model["base_model"]), adapters)
    with use_system(llm, "champion" if adapters else "base"):
        answer = generate(llm, tokenizer, [prompt], cfg.max_new_tokens, 1)[0]

    checked = screen_answer(answer, guard)
    out = {"question": redact_pii(question)[0], "answer": checked["answer"], "model": model["version"],
           "index_version": index_state, "sources": [] if checked["blocked"] else source_list(hits)}
    if cfg.cache:
        store_answer(ws, key, {**out, "blocked": checked["blocked"]})
    return {**out, "cached": False, "blocked": checked["blocked"], "guardrails": decisions + checked["decisions"],
            "seconds": time.perf_counter() - t}
