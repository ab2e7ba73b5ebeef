"""Typed settings of the ingest stage: sources and their limits, cleaning profiles and filters, validation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tasks.core.config import SAMPLE_CORPUS, SAMPLE_MESSY, StageConfig

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
