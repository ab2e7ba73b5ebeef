"""Typed settings of the evaluate stage: evaluation, the judge, the gate and the RAG / fine-tuning comparison."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tasks.core.config import StageConfig
from tasks.index.config import RerankConfig


class JudgeConfig(StageConfig):
    """Optional pairwise LLM-as-judge, asked twice per pair with the answers swapped."""

    enabled: bool = Field(default=False, description="Compare candidate and reference answers with a judge model.")
    model: str = Field(default="", description="Judge: a local causal LM folder or hub id; empty: the candidate's "
                       "base model (a small model makes a weak judge: use a larger one where you can).")
    max_examples: int = Field(default=50, ge=1, description="Pairs judged (the first N test questions).")


class GateConfig(StageConfig):
    """Declarative promotion rules: what a candidate must show against the champion (or the base model)."""

    primary_metric: Literal["token_f1", "exact_match", "rouge_l", "bleu", "meteor", "bertscore"] = Field(
        default="token_f1", description="The metric that must improve.")
    min_improvement: float = Field(default=0.02, ge=0, description="Least improvement of the primary metric, in its "
                                   "units (F1/EM/ROUGE-L 0-1, BLEU 0-100).")
    require_significant: bool = Field(default=True, description="The bootstrap interval's lower bound of the "
                                      "improvement must be above zero.")
    guards: dict[str, float] = Field(
        default_factory=lambda: {"exact_match": 0.05, "rouge_l": 0.05, "bleu": 5.0},
        description="Metrics that must not fall by more than the given amount (metric units).")
    max_perplexity_increase: float | None = Field(
        default=0.25, ge=0, description="Reference-answer perplexity may rise by at most this fraction; empty: no rule.")
    max_unsafe_increase: int = Field(default=0, ge=0, description="Unsafe answers (blocklist hits) may rise by at "
                                     "most this many.")
    require_same_base: bool = Field(default=True, description="Candidate and champion must share base model and "
                                    "tokenizer (an adapter only works on the base it was trained on).")

    @field_validator("guards")
    @classmethod
    def _known_guards(cls, v: dict[str, float]) -> dict[str, float]:
        known = {"exact_match", "token_f1", "rouge_l", "bleu", "meteor", "bertscore"}
        bad = sorted(set(v) - known)
        if bad:
            raise ValueError(f"unknown guard metrics {bad}: choose from {sorted(known)}")
        if any(t < 0 for t in v.values()):
            raise ValueError("guard tolerances must not be negative")
        return v


class EvalConfig(StageConfig):
    """Evaluation of a candidate adapter against the base model and the champion, then the gate."""

    candidate: str | None = Field(default=None, description="Training run id to evaluate; empty: the registry's "
                                  "challenger, else the newest finished training run.")
    split: Literal["test", "validation"] = Field(default="test", description="SFT dataset split evaluated.")
    max_examples: int | None = Field(default=None, ge=1, description="Evaluate only the first N examples.")
    test_file: str | None = Field(default=None, description="A Q/A JSONL file to evaluate on instead of the SFT "
                                  "dataset's split (e.g. a human-written set for a model trained on generated "
                                  "questions); its questions get prompts built the way serving builds them.")
    max_new_tokens: int = Field(default=48, ge=1, le=2048, description="Generation length limit (greedy decoding).")
    batch_size: int = Field(default=16, ge=1, description="Prompts per generation batch.")
    generation_cache: Literal["dynamic", "static"] = Field(
        default="dynamic", description="KV cache of greedy decoding: dynamic (ragtune's loop, finished answers "
        "leave the batch); static (transformers' generate with fixed shapes, its decoding step compiled with CUDA "
        "graphs on a GPU; the same tokens in float32, within bf16 rounding otherwise).")
    retrieval_k: int = Field(default=10, ge=1, le=100, description="Documents retrieved per question for the "
                             "retrieval metrics (the prompt takes the training run's context_k of them).")
    bootstrap_samples: int = Field(default=1000, ge=100, le=100_000, description="Paired bootstrap resamples.")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="Confidence level of the intervals.")
    seed: int = Field(default=0, description="Seed of the bootstrap resampling.")
    safety_blocklist: str = Field(default="data/safety/blocklist.txt",
                                  description="Blocklist of slurs and hateful phrases checked in every answer.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="Optional LLM-as-judge.")
    gate: GateConfig = Field(default_factory=GateConfig, description="Promotion rules.")
    report_examples: int = Field(default=12, ge=0, description="Per-example answers shown in the HTML report.")
    bertscore_model: str | None = Field(default="packaged:all-MiniLM-L6-v2", description="Encoder of BERTScore: "
                                        "`packaged:all-MiniLM-L6-v2`, a local folder or a hub id; empty: no BERTScore.")
    bertscore_layer: int | None = Field(default=None, ge=1, description="Hidden layer whose token embeddings are "
                                        "matched; empty: the encoder's documented default (see tasks/evaluate/metrics.py).")


class CompareConfig(StageConfig):
    """`ragtune compare`: RAG, fine-tuning or both? The base model and a fine-tuned run, each closed-book and with
    retrieval (and with reranking when a reranker is set), on the SFT test split: same decoding, same metrics,
    paired bootstrap intervals, cost, failure attribution and a one-sentence verdict."""

    candidate: str | None = Field(default=None, description="Training run id of the fine-tuned system; empty: the "
                                  "champion, else the registry's challenger, else the newest finished run.")
    split: Literal["test", "validation"] = Field(default="test", description="SFT dataset split compared on.")
    max_examples: int | None = Field(default=None, ge=1, description="Compare on the first N examples only.")
    max_new_tokens: int = Field(default=48, ge=1, le=2048, description="Generation length limit (greedy decoding).")
    batch_size: int = Field(default=16, ge=1, description="Prompts per generation batch.")
    generation_cache: Literal["dynamic", "static"] = Field(
        default="dynamic", description="KV cache of greedy decoding: dynamic (ragtune's loop, finished answers "
        "leave the batch); static (transformers' generate with fixed shapes, its decoding step compiled with CUDA "
        "graphs on a GPU; the same tokens in float32, within bf16 rounding otherwise).")
    rerank: RerankConfig = Field(default_factory=RerankConfig, description="When a model is set, the retrieval "
                                 "cells are also run with reranking; empty: the run's own reranking setting.")
    metric: Literal["token_f1", "exact_match", "rouge_l", "meteor", "bertscore"] = Field(
        default="token_f1", description="Metric of the verdict sentence and the chart.")
    bootstrap_samples: int = Field(default=1000, ge=100, le=100_000, description="Paired bootstrap resamples.")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="Confidence level of the intervals.")
    seed: int = Field(default=0, description="Seed of the bootstrap resampling.")
    attribution_recall: float = Field(default=0.8, gt=0, le=1, description="A reference answer counts as present in "
                                      "a text when it appears as a phrase, or when this share of its words does.")
    bertscore_model: str | None = Field(default="packaged:all-MiniLM-L6-v2", description="Encoder of BERTScore; "
                                        "empty: none.")
    bertscore_layer: int | None = Field(default=None, ge=1, description="BERTScore layer; empty: the default.")
    report_examples: int = Field(default=3, ge=0, description="Examples shown per failure kind in the report.")
