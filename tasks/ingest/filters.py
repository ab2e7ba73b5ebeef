"""Cleaning transforms and quality filters: small named functions, and `clean_document` that runs them.

Imported by worker processes, so it stays light: no Prefect, no datasketch."""

from __future__ import annotations

import heapq
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from tasks.core.records import sha256_text
from tasks.ingest import content
from tasks.ingest.config import CleanConfig
from tasks.ingest.dedup import signature, tokens
from tasks.ingest.formats.base import humanize_stem
from tasks.ingest.formats.html import html_to_text
from tasks.ingest.pii import redact_pii

# --- transforms: text in, text out -------------------------------------------------------------

_ODD_SPACE = re.compile(r"[\t\v\f\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_ZERO_WIDTH = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")
_SPACE_RUN = re.compile(r" {2,}")
_TRAILING = re.compile(r" +\n|\n +(?=\n)")
_BLANK_RUN = re.compile(r"\n{3,}")


def normalize_unicode(text: str, *, fix: bool = True, form: str = "NFC") -> str:
    """Repair mojibake (ftfy) and normalise to `form`; control characters are left for validation."""
    if fix:
        import ftfy
        from ftfy.badness import is_bad

        # ftfy's full pass costs ~0.3 ms per 2 KB; its own mojibake detector is a single regex, so clean
        # text (the common case) skips straight to normalisation
        if "\x1b[" in text or (not text.isascii() and is_bad(text)):
            text = ftfy.fix_text(text, remove_control_chars=False, normalization=None, unescape_html=False)
    return unicodedata.normalize(form, text)


def normalize_whitespace(text: str) -> str:
    """Unix newlines, one space between words, no trailing spaces, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.isascii():  # the common case: only tabs, vertical tabs and form feeds to fold
        text = text.replace("\t", " ").replace("\v", " ").replace("\f", " ")
    else:
        text = text.replace("\u2028", "\n").replace("\u2029", "\n\n")
        text = _ZERO_WIDTH.sub("", _ODD_SPACE.sub(" ", text))
    text = _SPACE_RUN.sub(" ", text)
    text = _TRAILING.sub("\n", text)
    return _BLANK_RUN.sub("\n\n", text).strip()


def strip_boilerplate(text: str, pattern: re.Pattern[str] | None) -> str:
    """Drop whole lines that match a boilerplate pattern (cookie banners, copyright footers, ...)."""
    if pattern is None:
        return text
    kept = [line for line in text.split("\n") if not pattern.fullmatch(line.strip().strip("*_#>- "))]
    return "\n".join(kept).strip()


def compile_boilerplate(patterns: list[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


# --- filters: text in, None (keep) or a drop reason out ----------------------------------------

_NOT_WORD_OR_SPACE = re.compile(r"[\w\s]+")
_SPACE = re.compile(r"\s+")


def too_short(text: str, *, min_chars: int = 50) -> str | None:
    """Fewer than `min_chars` non-space characters (characters, so any script is judged alike)."""
    n = sum(map(len, text.split()))
    return f"too_short: {n} non-space characters < {min_chars}" if n < min_chars else None


# fill-in blanks and rules drawn with one character ("Name: ______", "|-----|", "═════"): layout, not soup
_RULE_RUN = re.compile(r"([_.\-=~*─━═＿・…])\1{2,}")


def mostly_symbols(text: str, *, min_alnum_ratio: float = 0.5) -> str | None:
    """Letters, digits and combining marks of any script under `min_alnum_ratio` of non-space chars, not
    counting runs of one character drawn as blanks or rules; no letter or digit at all is always soup."""
    if not any(ch.isalnum() for ch in text):
        return "mostly_symbols: no letters or digits"
    text = _RULE_RUN.sub("", text)
    nonspace = sum(map(len, text.split()))
    if nonspace == 0:
        return "too_short: no visible characters"
    rest = _NOT_WORD_OR_SPACE.sub("", text) + "_" * text.count("_")
    symbols = sum(1 for ch in rest if not unicodedata.category(ch).startswith("M"))
    ratio = 1 - symbols / nonspace
    return f"mostly_symbols: {ratio:.2f} letters and digits < {min_alnum_ratio}" if ratio < min_alnum_ratio else None


def long_words(text: str, *, max_mean_chars: float = 20.0, toks: list[str] | None = None) -> str | None:
    """Mean token length above `max_mean_chars`: encoded blobs and mis-decoded bytes, not prose.

    Gopher (Rae et al. 2021) keeps English documents with a mean word length of 3 to 10; only the upper
    bound is kept, and raised, because tokens are counted per character in scripts without spaces."""
    toks = toks[:50_000] if toks is not None else tokens(text[:200_000])
    if not toks:
        return None
    mean = sum(map(len, toks)) / len(toks)
    return f"long_words: mean token length {mean:.0f} > {max_mean_chars:g}" if mean > max_mean_chars else None


# Gopher's thresholds for the share of characters inside the most frequent word n-gram (n = 2, 3, 4)
GOPHER_TOP_NGRAM = {2: 0.20, 3: 0.18, 4: 0.16}


def repeated_ngrams(text: str, *, thresholds: dict[int, float] | None = None,
                    toks: list[str] | None = None) -> str | None:
    """Gopher's top n-gram rule: one n-gram covering too much of the text marks boilerplate or junk."""
    # a prefix is enough to judge, and keeps a 10 MB line cheap
    toks = toks[:100_000] if toks is not None else tokens(text[:500_000])
    total = sum(map(len, toks))
    if len(toks) < 50 or total == 0:  # Gopher judges documents of 50 words or more
        return None
    limits = thresholds or GOPHER_TOP_NGRAM
    longest = heapq.nlargest(max(limits), map(len, toks))
    for n, limit in sorted(limits.items()):
        grams = Counter(zip(*(toks[i:] for i in range(n)), strict=False))
        gram, count = grams.most_common(1)[0]
        share = count * sum(len(t) for t in gram) / total
        if count > 1 and share > limit:
            return f"repeated_ngrams: most common {n}-gram covers {share:.0%} of characters (> {limit:.0%})"
        if n == 2 and count * sum(longest) / total <= min(limits.values()):
            # a longer n-gram occurs at most as often as the top bigram and is at most this long: done
            return None
    return None


def repeated_lines(text: str, *, max_line_fraction: float = 0.30, max_char_fraction: float = 0.20) -> str | None:
    """Gopher's repetition rules: the share of lines, and of characters, in lines seen before."""
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    if len(lines) < 3:
        return None
    seen: set[str] = set()
    dup_lines = dup_chars = 0
    for ln in lines:
        if ln in seen:
            dup_lines += 1
            dup_chars += len(ln)
        else:
            seen.add(ln)
    total_chars = sum(len(ln) for ln in lines)
    if dup_lines / len(lines) > max_line_fraction:
        return f"repeated_lines: {dup_lines}/{len(lines)} lines repeat (> {max_line_fraction:.0%})"
    if dup_chars / total_chars > max_char_fraction:
        return f"repeated_lines: {dup_chars / total_chars:.0%} of characters in repeated lines (> {max_char_fraction:.0%})"
    return None


# --- profiles: which rules apply to which document ---------------------------------------------

# formats a program wrote or reads: identifiers, hex ids, escapes and test strings are data here, not mash or a
# mixed-up codec, so only the plain signs of non-text (control and private-use codepoints, base64, bundles) apply
STRUCTURED_FORMATS = frozenset({"code", "config", "csv", "tsv", "xlsx", "log"})
HARD_REASONS = frozenset({"empty", "html_no_text", "misdecoded", "mostly_symbols"})
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    # a knowledge base: drop only what is not text or not content; nothing for being repetitive or short
    "knowledge": {"misdecoded": True, "mostly_symbols": True, "encoded_blobs": True, "keyboard_mash": True,
                  "placeholders": True, "boilerplate_only": True, "min_chars": 0, "long_words": False,
                  "gopher_repetition": False, "repeated_lines": False, "keep_when_facts_differ": True,
                  "strip_boilerplate": False, "min_alnum_ratio": 0.25},
    # a crawl: the same, plus the pre-training quality rules with their published thresholds
    "web": {"misdecoded": True, "mostly_symbols": True, "encoded_blobs": True, "keyboard_mash": True,
            "placeholders": True, "boilerplate_only": True, "min_chars": 50, "long_words": True,
            "gopher_repetition": True, "repeated_lines": True, "keep_when_facts_differ": False,
            "strip_boilerplate": True, "min_alnum_ratio": 0.5},
}


@dataclass(frozen=True)
class Rules:
    """The rules in force for one document: the profile's defaults, overridden by what the config sets."""

    profile: str
    misdecoded: bool
    mostly_symbols: bool
    encoded_blobs: bool
    keyboard_mash: bool
    placeholders: bool
    boilerplate_only: bool
    min_chars: int
    long_words: bool
    gopher_repetition: bool
    repeated_lines: bool
    keep_when_facts_differ: bool
    strip_boilerplate: bool
    min_alnum_ratio: float


def resolve_rules(cfg: CleanConfig, profile: str) -> Rules:
    values = {k: (v if (v := getattr(cfg, k)) is not None else default)
              for k, default in PROFILE_DEFAULTS[profile].items()}
    return Rules(profile=profile, **values)


def profile_for(cfg: CleanConfig, source_uri: str) -> str:
    """The configured profile, or with `auto`: web for documents fetched over http(s), knowledge otherwise."""
    if cfg.profile != "auto":
        return cfg.profile
    return "web" if source_uri.lower().startswith(("http://", "https://")) else "knowledge"


def keep_match(patterns: list[str], unit: str, doc_id: str) -> str | None:
    """The first `keep` glob that matches the unit, the document id or (for a pattern without a slash) the
    file name; None when none does."""

    names = {unit, doc_id, doc_id.split("#", 1)[0], unit.split("#", 1)[0]}
    base = {n.rsplit("/", 1)[-1] for n in names}
    for p in patterns:
        if any(fnmatchcase(n, p) for n in names) or ("/" not in p and any(fnmatchcase(b, p) for b in base)):
            return p
    return None


# --- one document ------------------------------------------------------------------------------


@dataclass
class Cleaned:
    record: dict[str, Any]
    reason: str | None = None
    pii: dict[str, int] = field(default_factory=dict)
    signature: Any = None
    profile: str = ""


def boilerplate_only(text: str, pattern: re.Pattern[str] | None) -> str | None:
    """Every line is boilerplate (a copyright footer, "Skip to content", "Back to top"): nothing else is there.
    Lines about cookies are left to `consent_banner`, which needs a banner's buttons: "We use cookies only for
    sign-in" alone is a fact about the company."""
    if pattern is None or re.search(r"cookie|consent", text, re.I) or strip_boilerplate(text, pattern):
        return None
    return "boilerplate_only: every line is boilerplate (footer, navigation)"


def content_reasons(text: str, rules: Rules, cfg: CleanConfig, toks: list[str], raw: str,
                    boilerplate: re.Pattern[str] | None, fmt: str = ""):
    """The quality judgements a `keep` pattern may overrule, lazily and in order (first objection wins).
    Banners are judged on `raw`, the text before boilerplate lines were stripped."""
    if rules.boilerplate_only:
        yield boilerplate_only(raw, boilerplate)
        yield content.consent_banner(raw)
    if rules.placeholders:
        yield content.placeholder(text)
    if rules.encoded_blobs:
        yield content.encoded_blob(text, code=fmt in STRUCTURED_FORMATS)
    if rules.keyboard_mash and fmt not in STRUCTURED_FORMATS:  # identifiers and hex ids are not words
        yield content.keyboard_mash(text)
    if rules.min_chars:
        yield too_short(text, min_chars=rules.min_chars)
    if rules.long_words:
        yield long_words(text, max_mean_chars=cfg.max_mean_token_chars, toks=toks)
    if rules.gopher_repetition:
        yield repeated_ngrams(text, toks=toks)
    if rules.repeated_lines:
        yield repeated_lines(text, max_line_fraction=cfg.max_dup_line_fraction,
                             max_char_fraction=cfg.max_dup_line_char_fraction)


def clean_document(rec: dict[str, Any], cfg: CleanConfig, boilerplate: re.Pattern[str] | None,
                   rules: Rules | None = None) -> Cleaned:
    """Run the transforms and checks on one record; the first check that objects names the reason.

    Checks of what the text is (empty, mis-decoded, symbols) always apply; the others can be overruled by a
    `keep` pattern, which is then recorded in the record's metadata."""
    rules = rules or resolve_rules(cfg, profile_for(cfg, rec.get("source_uri") or ""))
    rec = dict(rec)
    text = rec.get("text") or ""
    if rec.get("format") == "html" and cfg.html_to_text:
        text, page_title = html_to_text(text)
        if not text.strip():
            return Cleaned(rec, "html_no_text: no main text found in the page", profile=rules.profile)
        rec["title"] = rec.get("title") or page_title
    text = normalize_unicode(text, fix=cfg.fix_unicode, form=cfg.unicode_form)
    raw = text = normalize_whitespace(text)
    if rules.strip_boilerplate:
        text = strip_boilerplate(text, boilerplate)
    title = normalize_whitespace(normalize_unicode(rec.get("title") or "", fix=cfg.fix_unicode, form=cfg.unicode_form))
    pii: dict[str, int] = {}
    if cfg.redact_pii:
        text, pii = redact_pii(text)
        title, _ = redact_pii(title)
    rec["title"] = title.replace("\n", " ") or humanize_stem(rec["doc_id"])
    rec["text"] = text
    rec["content_hash"] = sha256_text(text)
    if not text:
        reason = "boilerplate_only: every line was boilerplate, stripped" if raw else "empty: no text after cleaning"
        return Cleaned(rec, reason, pii, profile=rules.profile)
    for reason in (
        content.misdecoded(text, code=rec.get("format") in STRUCTURED_FORMATS) if rules.misdecoded else None,
        mostly_symbols(text, min_alnum_ratio=rules.min_alnum_ratio) if rules.mostly_symbols else None,
    ):
        if reason:
            return Cleaned(rec, reason, pii, profile=rules.profile)

    toks = tokens(text)  # one tokenisation serves the filters and the MinHash signature
    reason = next((r for r in content_reasons(text, rules, cfg, toks, raw, boilerplate, rec.get("format") or "")
                   if r), None)
    if reason:
        pattern = keep_match(cfg.keep, rec.get("unit") or "", rec.get("doc_id") or "") if cfg.keep else None
        if pattern is None:
            return Cleaned(rec, reason, pii, profile=rules.profile)
        rec["metadata"] = {**(rec.get("metadata") or {}), "kept": {"pattern": pattern, "past": reason}}
    sig = signature(text, cfg.minhash_num_perm, cfg.shingle_size, toks=toks) if cfg.near_dedup else None
    return Cleaned(rec, None, pii, sig, rules.profile)


def clean_batch(batch: list[dict[str, Any]], cfg_json: str) -> list[Cleaned]:
    """`clean_document` over a batch; the entry point of worker processes (hence a JSON config)."""
    cfg = CleanConfig.model_validate_json(cfg_json)
    pattern = compile_boilerplate(cfg.boilerplate_patterns)
    rules = {p: resolve_rules(cfg, p) for p in PROFILE_DEFAULTS}
    return [clean_document(r, cfg, pattern, rules[profile_for(cfg, r.get("source_uri") or "")]) for r in batch]
