"""Answers of one system (the base model, or the base model with an adapter) to a list of prompts, with the
reference answers' likelihoods, kept in the workspace under a key made of everything that decides them: the
weights, the prompts, the references, the decoding settings, the compute dtype, the library versions and the
generation code. Greedy decoding is deterministic for a given key, so the comparison reuses the evaluation's
answers with retrieval instead of generating them again, and a second evaluation against the same champion
reuses the champion's."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from tasks.core.provenance import code_digest, file_digest
from tasks.core.workspace import PROJECT_ROOT, Workspace, atomic_write_json, read_json
from tasks.train.generate import BASE, answer_nll, generate, load_systems, prompt_ids, use_system
from tasks.train.model import load_tokenizer
from tasks.train.train import choose_device, compute_dtype

log = logging.getLogger("ragtune.generations")
# the code whose change could change an answer or a likelihood
GENERATION_CODE = (PROJECT_ROOT / "tasks" / "train" / "generate.py", PROJECT_ROOT / "tasks" / "train" / "model.py")


@dataclass
class Generated:
    """One system's outputs on one prompt list: answers, (summed NLL, tokens) of each reference answer, and the
    seconds the answers took to generate when they were generated (the cost a comparison reports)."""

    answers: list[str]
    nll: list[tuple[float, int]]
    generation_s: float
    reused: bool = False


@lru_cache(maxsize=8)
def _weights_digest(path: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, _, _ in stamp:
        h.update(name.encode() + b"\0" + file_digest(Path(path) / name).encode())
    return h.hexdigest()[:16]


def weights_digest(path: str | Path | None) -> str | None:
    """A digest of a local model or adapter folder's files (weights, configs, tokenizer, generation config),
    computed once per process and file version; a hub id stands for itself."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_dir():
        return str(path)
    files = sorted(f for f in p.iterdir() if f.is_file())
    return _weights_digest(str(p), tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for pkg in ("torch", "transformers", "peft", "bitsandbytes"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def generation_key(base_path: str, adapter_dir: str | None, prompts: list[list[dict[str, str]]],
                   references: list[str], max_new_tokens: int, batch_size: int, device: str, dtype: str,
                   cache: str = "dynamic") -> str:
    """What decides a system's answers and likelihoods. The batch size is in it: rows are padded to the longest
    of their batch, and padded batches of another size can round differently."""
    key = {"base": weights_digest(base_path), "adapter": weights_digest(adapter_dir), "prompts": prompts,
           "references": references, "max_new_tokens": max_new_tokens, "batch_size": batch_size, "device": device,
           "dtype": dtype, "cache": cache, "versions": _versions(), "code": code_digest(*GENERATION_CODE)}
    return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:24]


def generations_dir(ws: Workspace) -> Path:
    return ws.root / "generations"


def load_generated(ws: Workspace, key: str) -> Generated | None:
    data = read_json(generations_dir(ws) / f"{key}.json", default=None)
    if not data:
        return None
    return Generated(data["answers"], [(float(s), int(n)) for s, n in data["nll"]], float(data["generation_s"]), True)


class SystemRunner:
    """Answers of several systems sharing one base model: each system's outputs come from the workspace when
    its key is there, else from the model, loaded once on first need with every adapter attached."""

    def __init__(self, ws: Workspace, base_path: str, adapters: dict[str, str], batch_size: int,
                 max_new_tokens: int, device: str | None = None, cache: str = "dynamic") -> None:
        self.ws, self.base_path, self.adapters, self.cache = ws, base_path, adapters, cache
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.device = device or choose_device()
        self.dtype = str(compute_dtype(self.device)).removeprefix("torch.")
        self.model: Any = None
        self.tokenizer: Any = None
        self.load_s = 0.0

    def _loaded(self) -> tuple[Any, Any]:
        if self.model is None:
            t = time.perf_counter()
            self.model, self.tokenizer = load_systems(self.base_path, self.adapters, self.device)
            self.load_s = time.perf_counter() - t
        return self.model, self.tokenizer

    def run(self, system: str, prompts: list[list[dict[str, str]]], references: list[str],
            ) -> Generated:
        """`system` is BASE or an adapter name. Answers are generated and likelihoods computed only when the
        workspace holds no outputs for the same key; new outputs are written there."""
        key = generation_key(self.base_path, None if system == BASE else self.adapters[system], prompts, references,
                             self.max_new_tokens, self.batch_size, self.device, self.dtype, self.cache)
        found = load_generated(self.ws, key)
        if found is not None:
            log.info("%s: %d answers reused (generations/%s.json)", system, len(found.answers), key)
            return found
        model, tokenizer = self._loaded()
        with use_system(model, system):
            t = time.perf_counter()
            answers = generate(model, tokenizer, prompts, self.max_new_tokens, self.batch_size, cache=self.cache)
            seconds = time.perf_counter() - t
            nll = answer_nll(model, tokenizer, prompts, references, self.batch_size)
        out = Generated(answers, nll, seconds)
        atomic_write_json(generations_dir(self.ws) / f"{key}.json",
                          {"key": key, "system": system, "answers": answers, "nll": [list(x) for x in nll],
                           "generation_s": seconds, "max_new_tokens": self.max_new_tokens,
                           "batch_size": self.batch_size, "device": self.device, "dtype": self.dtype,
                           "cache": self.cache})
        return out

    def prompt_tokens(self, prompts: list[list[dict[str, str]]]) -> list[int]:
        """Token count of each chat prompt (the tokenizer alone, no model load)."""
        tok = self.tokenizer or load_tokenizer(self.base_path)
        return [len(prompt_ids(tok, p)) for p in prompts]

    def close(self) -> None:
        """Drop the model now, so the next step's memory does not stack on it."""
        self.model = self.tokenizer = None
