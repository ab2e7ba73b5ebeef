"""Prompts as the model sees them in training, evaluation and serving: numbered passages, chat messages, retrieval."""

from __future__ import annotations

import time
from typing import Any

from tasks.core.workspace import Workspace
from tasks.index.embed import embed_texts
from tasks.index.qdrant import open_client
from tasks.index.rerank import candidate_depth, rerank
from tasks.index.search import location, search_collection
from tasks.index.served import require_served
from tasks.train.config import SFTDataConfig


def format_context(passages: list[dict[str, Any]], max_chars: int) -> str:
    """Numbered passages, each with its title and section, trimmed at a word boundary."""
    lines = []
    for i, p in enumerate(passages, start=1):
        text = " ".join(str(p.get("text", "")).split())
        if len(text) > max_chars:
            text = text[:max_chars].rsplit(" ", 1)[0] + " …"
        where = location(p)
        lines.append(f"[{i}] {where}: {text}" if where else f"[{i}] {text}")
    return "\n".join(lines)


def build_messages(question: str, answer: str, context: str | None, system_prompt: str) -> list[dict[str, str]]:
    user = f"Context:\n{context}\n\nQuestion: {question}" if context else question
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*msgs, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def retrieve_contexts(ws: Workspace, questions: list[str], cfg: SFTDataConfig, k: int | None = None,
                      ) -> tuple[list[list[dict[str, Any]]], str]:
    """Top-k chunks (`k`, else `cfg.context_k`) from the served index for each question (hybrid, as served;
    with `cfg.rerank` on, the top `candidates` reranked by the cross-encoder); returns (passages per question,
    index version). All questions are embedded in one call, and all candidates scored in one reranker call."""
    client = open_client(ws)
    try:
        index = require_served(ws, cfg.index_name, client, "or set rag_context: false")
        vectors = embed_texts(questions, index.config.embedding_model)
        k = k or cfg.context_k
        out = [search_collection(client, index.collection, q, index.config, candidate_depth(k, cfg.rerank), "hybrid",
                                 dense_vector=v.tolist()) for q, v in zip(questions, vectors, strict=True)]
    finally:
        client.close()
    return rerank(questions, out, k, cfg.rerank, ws), index.index_version


def serving_prompts(ws: Workspace, rows: list[dict[str, Any]], data: SFTDataConfig, depth: int) -> dict[str, Any]:
    """Prompts as `ragtune ask` builds them (fresh retrieval from the served index, reranked when the settings say
    so, the run's prompt settings; closed-book when `rag_context` is off). Returns {prompts, contexts (the passages'
    text in each prompt, for failure attribution), ranked (doc ids per question, `depth` deep), index_version,
    seconds}. Conversations given as such are kept, their user turn counted as their context."""
    t = time.perf_counter()
    prompts = [r["messages"][:-1] for r in rows]
    contexts: list[str | None] = [None] * len(rows)
    ranked: list[list[str]] = [[] for _ in rows]
    in_prompt: list[list[str]] = [[] for _ in rows]  # doc ids of the passages the prompt holds
    index_version = None
    need = [i for i, r in enumerate(rows) if not r.get("given_messages")]
    if data.rag_context and need:
        hits, index_version = retrieve_contexts(ws, [rows[i]["question"] for i in need], data,
                                                k=max(depth, data.context_k))
        for i, h in zip(need, hits, strict=True):
            contexts[i] = format_context(h[:data.context_k], data.context_chars)
            ranked[i] = list(dict.fromkeys(x["doc_id"] for x in h))
            in_prompt[i] = list(dict.fromkeys(x["doc_id"] for x in h[:data.context_k]))
    for i in need:
        prompts[i] = build_messages(rows[i]["question"], "", contexts[i], data.system_prompt)[:-1]
    for i, r in enumerate(rows):
        if r.get("given_messages"):
            contexts[i] = next((m["content"] for m in reversed(prompts[i]) if m["role"] == "user"), None)
    return {"prompts": prompts, "contexts": contexts, "ranked": ranked, "in_prompt": in_prompt,
            "index_version": index_version, "seconds": time.perf_counter() - t}
