"""Typed settings of the serving stage: the server, its guardrails, the monitoring rules and feedback review."""

from __future__ import annotations

from typing import Literal

from limits import parse_many
from pydantic import Field, field_validator

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
    max_json_depth: int = Field(default=8, ge=2, le=64, description="Bodies nested deeper (objects and lists) get "
                                "a 400 before they are parsed.")
    max_number_digits: int = Field(default=18, ge=1, le=1000, description="Numbers with more digits get a 400 (no "
                                   "field needs more; Python refuses to parse past 4,300).")
    max_filters: int = Field(default=8, ge=0, le=64, description="Payload filters per question at most.")
    safety_blocklist: str = Field(default="data/safety/blocklist.txt", description="Blocklist checked in every "
                                  "answer (the one evaluation uses; a hit withholds the answer) and in every question "
                                  "(a hit refuses it, with refuse_abusive_questions).")
    refuse_abusive_questions: bool = Field(default=True, description="Refuse (400) a question that holds a term of "
                                           "the safety blocklist or asks for hateful or abusive text (abusive_requests).")
    abusive_requests: str = Field(default="data/safety/abusive_requests.txt", description="Regular expressions, one "
                                  "per line, of requests for insults, slurs or hate speech (checked on every question).")
    not_found: bool = Field(default=True, description="Answer 'not found in the documents' when the best "
                            "passage's similarity is below the threshold, instead of guessing.")
    min_support: float | None = Field(default=None, ge=-1, le=1, description="Similarity threshold (cosine of the "
                                      "question and the closest passage); empty: the calibrated value in "
                                      "serve/calibration.json, else 0.2.")


class AuthConfig(StageConfig):
    """Who may call the server: API keys with roles (`ragtune keys`), anonymous access, and browser origins."""

    allow_anonymous: bool = Field(default=False, description="Accept requests without an API key although keys "
                                  "exist or the server listens beyond loopback (`--allow-anonymous`); anonymous "
                                  "clients are told apart by their IP address.")
    anonymous_role: Literal["ask", "feedback"] = Field(default="feedback", description="What an anonymous client "
                                                        "may do when anonymous access is allowed: ask, or ask and vote.")
    anonymous_feedback_counts: bool = Field(default=False, description="Count anonymous votes in the monitor when "
                                            "anonymous access was allowed explicitly (a loopback server without "
                                            "keys, the operator's own machine, always counts them).")
    allowed_origins: list[str] = Field(default_factory=list, description="Browser origins (scheme://host[:port]) "
                                       "allowed to POST besides the server's own; other origins get a 403 (CSRF).")
    forwarded_allow_ips: str | None = Field(default=None, description="Addresses of the reverse proxy whose "
                                            "X-Forwarded-For and X-Forwarded-Proto are trusted (comma-separated, "
                                            "e.g. 127.0.0.1); empty: the client is the TCP peer.")


class LimitConfig(StageConfig):
    """Rate limits, backpressure and connection timeouts: what tells a client to back off or cuts it off."""

    ask_rate: str | None = Field(default="10/second;120/minute", description="Questions per client (API key, or "
                                 "IP address when anonymous) as `limits` rate strings joined by ';'; past it a 429 "
                                 "with Retry-After. Empty: no limit.")
    feedback_rate: str | None = Field(default="5/second;30/minute", description="Votes per client, as ask_rate.")
    tarpit_s: float = Field(default=1.0, ge=0, le=30, description="A client that goes on after a 429 waits this "
                            "long for each further 429 of the same window (its flood costs it time, not the server).")
    max_queue: int = Field(default=32, ge=1, le=10_000, description="Questions in progress at most (retrieving, "
                           "waiting for or in a generation batch); more get a 503 with Retry-After at once.")
    header_timeout_s: float = Field(default=10.0, gt=0, le=300, description="A request's headers must arrive within "
                                    "this time of the connection opening (or of the previous response); else 408 and "
                                    "the connection is closed.")
    body_timeout_s: float = Field(default=10.0, gt=0, le=300, description="A request's body must arrive within this "
                                  "time of its headers; else 408.")
    keep_alive_s: int = Field(default=5, ge=1, le=300, description="Idle keep-alive connections are closed after "
                              "this many seconds.")
    max_connections: int = Field(default=256, ge=1, le=100_000, description="Open connections and requests at most "
                                 "(uvicorn's limit_concurrency); past it a 503.")
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024, description="Request line and "
                                  "headers larger than this are refused (h11's incomplete event limit).")

    @field_validator("ask_rate", "feedback_rate")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            parse_many(value)  # ValueError with the library's reason for a malformed rate
            return value.strip()
        return None


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
    auth: AuthConfig = Field(default_factory=AuthConfig, description="API keys, anonymous access, browser origins.")
    limits: LimitConfig = Field(default_factory=LimitConfig, description="Rate limits, queue bound and timeouts.")


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
    max_client_share: float = Field(default=0.25, gt=0, le=1, description="No client (API key, or anonymous IP "
                                    "address) makes more than this share of the requests, or of the votes, that the "
                                    "figures are computed on (at least an equal share when there are few clients); "
                                    "the rest of its records are left out, an even sample of them kept.")
    min_clients: int = Field(default=3, ge=1, description="Distinct clients needed among the answered requests "
                             "before any rule applies, and among the counted votes before the thumbs-up rule does.")
    max_votes_per_minute: int = Field(default=20, ge=1, description="A client that votes more often than this in "
                                      "some minute of the window is flagged as a burst in the report, and none of "
                                      "its votes count.")


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
