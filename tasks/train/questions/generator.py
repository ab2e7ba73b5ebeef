"""Pairs written by a generator model, for corpora whose structure says little (prose, transcripts): a local causal
LM (any folder transformers loads from safetensors, or the packaged SmolLM2) or an OpenAI-compatible
`/chat/completions` endpoint, whose API key is read from an environment variable at call time and never stored.
Each reply is parsed into (question, answer); the checks in `filters` then decide what is kept."""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import httpx

from tasks.core.workspace import Workspace
from tasks.train.config import QuestionsConfig
from tasks.train.generate import generate, load_systems
from tasks.train.model import resolve_base_model

SYSTEM = ("You write test questions for a search assistant. Given a passage from a document, write ONE question "
          "that a reader of these documents could ask and that the passage answers, and the SHORTEST answer copied "
          'word for word from the passage. Reply with JSON only: {"question": "...", "answer": "..."}')
OPENAI = "openai:"
MAX_PASSAGE_CHARS = 1500
_JSON = re.compile(r"\{[^{}]*\}", re.S)
_QA_LINES = re.compile(r"(?:^|\n)\s*(?:Q|Question)\s*[:.]\s*(?P<q>.+?)\s*\n\s*(?:A|Answer)\s*[:.]\s*(?P<a>.+)", re.I)


def messages_for(chunk: dict[str, Any]) -> list[dict[str, str]]:
    where = " > ".join(x for x in (chunk.get("title"), chunk.get("section")) if x)
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Document: {where}\n\nPassage:\n{chunk['text'][:MAX_PASSAGE_CHARS]}"}]


def parse_pair(reply: str) -> tuple[str, str] | None:
    """(question, answer) from a reply: the first JSON object with both, else `Question: ... Answer: ...` lines."""
    for m in _JSON.finditer(reply or ""):
        try:
            obj = json.loads(m.group(0))
        except json.JSONDecodeError:
            continue
        q, a = obj.get("question"), obj.get("answer")
        if isinstance(q, str) and isinstance(a, str) and q.strip() and a.strip():
            return q.strip(), a.strip()
    m = _QA_LINES.search(reply or "")
    if m:
        return m.group("q").strip(), m.group("a").strip().splitlines()[0].strip()
    return None


def describe(cfg: QuestionsConfig) -> str | None:
    """The generator as provenance records it (the endpoint and model name; never a key)."""
    if not cfg.generator:
        return None
    return f"{cfg.generator}#{cfg.generator_model}" if cfg.generator.startswith(OPENAI) else cfg.generator


class LocalGenerator:
    """A causal LM on this machine, greedy decoding in length-sorted batches (the evaluation's own code)."""

    def __init__(self, ws: Workspace, name: str, max_new_tokens: int = 96, batch_size: int = 8) -> None:
        self.path = resolve_base_model(ws, name)
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def __call__(self, chunks: list[dict[str, Any]]) -> list[tuple[str, str] | None]:
        model, tokenizer = load_systems(self.path, {})
        replies = generate(model, tokenizer, [messages_for(c) for c in chunks], self.max_new_tokens, self.batch_size)
        return [parse_pair(r) for r in replies]


class EndpointGenerator:
    """An OpenAI-compatible `/chat/completions` endpoint (vLLM, llama.cpp server, a hosted API)."""

    def __init__(self, base_url: str, model: str, api_key_env: str, timeout_s: float, retries: int = 2) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"generator endpoint must be an http(s) URL, not {base_url!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env, self.timeout_s, self.retries = model, api_key_env, timeout_s, retries

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env)  # read per run, kept in memory only
        return {"Authorization": f"Bearer {key}"} if key else {}

    def ask(self, client: httpx.Client, messages: list[dict[str, str]]) -> str:
        body = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": 160}
        for attempt in range(self.retries + 1):
            try:
                res = client.post(self.url, json=body, headers=self._headers())
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise RuntimeError(f"generator endpoint {self.url} unreachable: {type(exc).__name__}") from None
                time.sleep(1.0 * (attempt + 1))
                continue
            if res.status_code in (429, 500, 502, 503, 504) and attempt < self.retries:
                time.sleep(float(res.headers.get("retry-after", 1.0 * (attempt + 1))))
                continue
            if res.status_code == 401 or res.status_code == 403:
                raise RuntimeError(f"generator endpoint {self.url} refused the key in ${self.api_key_env} "
                                   f"(HTTP {res.status_code})")
            if res.status_code >= 400:
                raise RuntimeError(f"generator endpoint {self.url} answered HTTP {res.status_code}")
            try:
                return str(res.json()["choices"][0]["message"]["content"])
            except (ValueError, KeyError, IndexError, TypeError):
                return ""
        return ""

    def __call__(self, chunks: list[dict[str, Any]]) -> list[tuple[str, str] | None]:
        with httpx.Client(timeout=self.timeout_s) as client:
            return [parse_pair(self.ask(client, messages_for(c))) for c in chunks]


def make_generator(ws: Workspace, cfg: QuestionsConfig) -> Any:
    """The configured generator, or None for structural pairs only."""
    if not cfg.generator:
        return None
    if cfg.generator.startswith(OPENAI):
        return EndpointGenerator(cfg.generator[len(OPENAI):], cfg.generator_model, cfg.api_key_env,
                                 cfg.generator_timeout_s)
    return LocalGenerator(ws, cfg.generator)
