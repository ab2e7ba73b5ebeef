"""Typed settings of the serving stage: the server, its guardrails, the monitoring rules and feedback review."""

from __future__ import annotations

from pydantic import Field

from tasks.core.config import StageConfig

NOT_FOUND_ANSWER = "I could not find this in the documents."
BLOCKED_ANSWER = "The answer was withheld by the safety check."


class GuardrailConfig(StageConfig):
    """Checks on every question and answer; each decision is logged with its reason."""

    max_question_chars: int = Field(default=2000, ge=1, description="Longer questions get a 400 with the limit.")
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, description="Request bodies above this get a 413 "
                                "before they are parsed.")
    redact_pii: bool = Field(default=True, description="Redact emails, phone numbers, cards and secrets in the "
                             "question, correction and comment before anything is written to disk (the ingest "
                             "redaction patterns).")
    prompt_injection: bool = Field(default=True, description="Flag questions and retrieved passages that match the "
                                   "documented prompt-injection patterns (flagged in the response and the log).")
    block_injection_questions: bool = Field(default=False, description="Refuse (400) a question that matches an "
                                            "injection pattern instead of flagging it.")
    drop_injected_passages: bool = Field(default=False, description="Leave flagged passages out of the prompt "
                                         "(they are still listed, flagged, in the response).")
    safety_blocklist: str = Field(default="data/safety/blocklist.txt", description="Blocklist checked in every "
                                  "answer (the one evaluation uses); a hit withholds the answer.")
    not_found: bool = Field(default=True, description="Answer 'not found in the documents' when the best "
                            "passage's similarity is below the threshold, instead of guessing.")
    min_support: float | None = Field(default=None, ge=-1, le=1, description="Similarity threshold (cosine of the "
                                      "question and the closest passage); empty: the calibrated value in "
                                      "serve/calibration.json, else 0.2.")


class ServeConfig(StageConfig):
    """`ragtune serve`: the long-lived server that answers with the champion and the served index."""

    host: str = Field(default="127.0.0.1", description="Interface to listen on (0.0.0.0 for every interface).")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port (0: any free port).")
    workers: int = Field(default=1, ge=1, le=64, description="Server processes (each loads the model).")
    index_name: str = Field(default="docs", description="Index (alias) to retrieve from.")
    k: int | None = Field(default=None, ge=1, le=20, description="Passages put in the prompt and returned as "
                          "sources; empty: the champion's context_k (what it was trained with).")
    max_new_tokens: int = Field(default=96, ge=1, le=2048, description="Answer length limit (greedy decoding).")
    cache: bool = Field(default=True, description="Reuse the answer to the same question for the same index and "
                        "model versions (the cache of `ragtune ask`).")
    batch_window_ms: float = Field(default=25.0, ge=0, le=5000, description="How long the first queued question "
                                   "waits for others to share its generation batch.")
    batch_max_wait_ms: float = Field(default=250.0, ge=0, le=10_000, description="How long a generation batch "
                                     "waits, at most, for questions still being retrieved (so that a burst is "
                                     "answered in one batch, not in a small one and a late one).")
    max_batch: int = Field(default=16, ge=1, le=256, description="Questions generated together at most (1: one "
                           "at a time).")
    reload_interval_s: float = Field(default=2.0, gt=0, description="How often the champion alias and the served "
                                     "index are checked for a change (hot swap).")
    off_topic_questions: str = Field(default="data/sample/offtopic.jsonl", description="JSONL of questions the "
                                     "documents do not answer (`question` per line), used by `ragtune calibrate` with "
                                     "the evaluation split to choose the not-found threshold.")
    segment_max_records: int = Field(default=1000, ge=1, description="Requests per log segment before a new one "
                                     "is started (closed segments are rotated into the `requests` dataset).")
    guardrails: GuardrailConfig = Field(default_factory=GuardrailConfig, description="Input and output checks.")


class MonitorRules(StageConfig):
    """Limits that make a window 'degraded'; a rule whose figure is unknown (no data) is not broken."""

    min_requests: int = Field(default=20, ge=1, description="Windows with fewer answered requests are not judged.")
    min_thumbs_up_rate: float | None = Field(default=0.5, ge=0, le=1, description="Share of rated answers "
                                             "voted up (needs min_feedback ratings).")
    min_feedback: int = Field(default=5, ge=1, description="Ratings needed before the thumbs-up rule applies.")
    max_not_found_rate: float | None = Field(default=0.3, ge=0, le=1, description="Share of answers that were "
                                             "'not found in the documents'.")
    max_score_psi: float | None = Field(default=0.25, ge=0, description="Population stability index of the "
                                        "top retrieval scores against the evaluation split's (0.1 moderate, "
                                        "0.25 large shift).")
    max_drift_pvalue: float | None = Field(default=0.01, gt=0, le=1, description="The PSI rule breaks only when "
                                           "the Kolmogorov-Smirnov test also rejects 'same distribution' at this "
                                           "p-value (an hour of traffic is a small sample); empty: PSI alone.")
    max_latency_p95_ms: float | None = Field(default=None, gt=0, description="95th percentile latency limit.")
    max_block_rate: float | None = Field(default=0.2, ge=0, le=1, description="Share of requests refused or "
                                         "withheld by a guardrail.")
    max_no_document_rate: float | None = Field(default=0.3, ge=0, le=1, description="Share of questions whose "
                                               "best passage scores below the support threshold (topics the "
                                               "documents do not cover).")


class MonitorConfig(StageConfig):
    """The hourly monitoring window over the request log and the feedback."""

    window_hours: float = Field(default=1.0, gt=0, description="Length of the window that ends now.")
    rules: MonitorRules = Field(default_factory=MonitorRules, description="When to emit ragtune.quality.degraded.")
    emit_event: bool = Field(default=True, description="Emit ragtune.quality.degraded when a rule is broken.")


class FeedbackConfig(StageConfig):
    """How votes and corrections become reviewed Q/A pairs for the next training run."""

    auto_accept: bool = Field(default=False, description="Accept every candidate pair that passes the checks "
                              "without a person reviewing it (for teams that trust their users).")
    use_upvoted_answers: bool = Field(default=True, description="An up-voted answer becomes a candidate pair "
                                      "(the corrections of down-voted answers always do).")


class AskConfig(StageConfig):
    """`ragtune ask`: answer with the champion (or the base model) and retrieved context."""

    max_new_tokens: int = Field(default=96, ge=1, le=2048, description="Answer length limit (greedy decoding).")
    index_name: str = Field(default="docs", description="Index (alias) to retrieve context from.")
    cache: bool = Field(default=True, description="Reuse the answer to the same question for the same index and "
                        "model versions.")
