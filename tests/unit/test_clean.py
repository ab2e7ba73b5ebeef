"""Cleaning transforms and filters on inline text, including Korean and hostile inputs."""

from __future__ import annotations

import time

import pytest

from tasks.ingest.config import DEFAULT_BOILERPLATE, CleanConfig
from tasks.ingest.filters import (
    clean_document,
    compile_boilerplate,
    long_words,
    mostly_symbols,
    normalize_unicode,
    normalize_whitespace,
    repeated_lines,
    repeated_ngrams,
    strip_boilerplate,
    too_short,
)
from tasks.ingest.formats.html import html_to_text
from tasks.ingest.pii import find_pii, redact_pii

KOREAN = "서울 사무소는 평일 오전 9시부터 오후 6시까지 운영합니다. 회의실은 사내 포털에서 예약할 수 있으며 최대 2시간까지 사용할 수 있습니다."


def test_normalize_unicode_repairs_mojibake_and_keeps_control_chars_for_validation():
    assert normalize_unicode("cafÃ©") == "café"
    assert "\x00" in normalize_unicode("a\x00b")  # the validation suite decides about control characters
    assert normalize_unicode("ㅋㅋ 한국어") == "ㅋㅋ 한국어"  # NFC keeps compatibility jamo


def test_normalize_whitespace():
    raw = "a\u00a0\u00a0b\t\tc  \r\n\r\n\r\n\r\nd\u200b e \n"
    assert normalize_whitespace(raw) == "a b c\n\nd e"


def test_html_to_text_removes_page_chrome_and_keeps_structure():
    html = ("<html><head><title>Pricing | Acme</title><script>var t=1;</script></head><body>"
            "<nav><a href='/'>Home</a> <a href='/docs'>Docs</a></nav>"
            "<div class='cookie'>We use cookies to improve your experience.</div>"
            "<main><h1>Pricing</h1><p>The Cutter plan costs 29 dollars per user per month.</p>"
            "<ul><li>Skiff is free</li></ul></main><footer>© 2026 Acme. All rights reserved.</footer></body></html>")
    text, title = html_to_text(html)
    assert "Cutter plan costs 29 dollars" in text and "# Pricing" in text and "- Skiff is free" in text
    assert "var t" not in text and "Docs" not in text and "All rights reserved" not in text
    assert title == "Pricing"


def test_html_with_only_scripts_has_no_text():
    text, _ = html_to_text("<html><head><script>a()</script></head><body><script>b()</script><style>p{}</style></body></html>")
    assert text.strip() == ""


def test_boilerplate_lines_are_dropped():
    pat = compile_boilerplate(DEFAULT_BOILERPLATE)
    text = "Real content here.\n© 2026 Acme Ltd. All rights reserved.\nSkip to content\nMore content."
    assert strip_boilerplate(text, pat) == "Real content here.\nMore content."


def test_quality_filters_are_language_agnostic():
    assert too_short(KOREAN) is None and mostly_symbols(KOREAN) is None and repeated_lines(KOREAN) is None
    hindi = "नमस्ते दुनिया यह एक परीक्षण वाक्य है जिसमें कई मात्राएँ और संयुक्ताक्षर हैं"
    assert mostly_symbols(hindi) is None
    assert too_short("short").startswith("too_short")
    thai = "สำนักงานกรุงเทพเปิดทำการวันจันทร์ถึงวันศุกร์ตั้งแต่เก้าโมงเช้าถึงหกโมงเย็น"
    assert long_words(thai) is None and long_words(KOREAN) is None
    assert long_words("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5eg" * 3).startswith("long_words")
    assert mostly_symbols("#### ---- **** ==== |||| ~~~~ abc").startswith("mostly_symbols")
    assert repeated_ngrams(KOREAN * 2) is None and repeated_ngrams(hindi) is None
    assert repeated_ngrams("click here to win " * 30).startswith("repeated_ngrams")
    assert repeated_lines("\n".join(["Buy now!"] * 5 + ["real line one", "real line two"])).startswith("repeated_lines")


def test_filters_are_linear_on_a_10mb_line():
    big = "word " * 2_000_000
    t = time.perf_counter()
    assert too_short(big) is None and mostly_symbols(big) is None and repeated_lines(big) is None
    assert repeated_ngrams(big) is not None and long_words(big) is None
    normalize_whitespace(big)
    assert time.perf_counter() - t < 30  # generous: a quadratic step would take hours


@pytest.mark.parametrize("text, kind", [
    ("write to jane.doe@example.com today", "email"),
    ("call +44 131 496 0000 now", "phone"),
    ("call (555) 010-0123", "phone"),
    ("서울 02-1234-5678 으로 연락", "phone"),
    ("card 4111 1111 1111 1111 exp", "card"),
    ("key sk_live_4eC39HqLyjWDarjtT1zdp7dc", "secret"),
    ("aws AKIAIOSFODNN7EXAMPLE here", "secret"),
    ("token ghp_0123456789abcdefghijklmnopqrstuvwxyzAB", "secret"),
    ("config api_key = 'hunter2hunter2'", "secret"),
])
def test_pii_is_redacted_with_counts(text, kind):
    redacted, counts = redact_pii(text)
    assert counts.get(kind) == 1, (redacted, counts)
    assert find_pii(redacted) == {}


def test_pii_leaves_dates_versions_and_prices_alone():
    text = "Released 2026-01-27 as v5.1.0; the Cutter plan is $29 per user; order 123456; port 8080."
    assert redact_pii(text) == (text, {})


def test_clean_document_html_record_gets_title_and_hash():
    rec = {"doc_id": "web/x.html", "unit": "s/web/x.html", "source_uri": "file:///s/web/x.html", "title": "",
           "text": "<html><head><title>About us</title></head><body><main><p>" + "Marrowfield builds tools. " * 5
           + "</p><p>Mail info@marrowfield.example.</p></main></body></html>", "format": "html", "metadata": {}}
    out = clean_document(rec, CleanConfig(), compile_boilerplate(DEFAULT_BOILERPLATE))
    assert out.reason is None and out.record["title"] == "About us"
    assert "[EMAIL]" in out.record["text"] and out.pii == {"email": 1}
    assert len(out.record["content_hash"]) == 64 and out.signature is not None


def test_clean_document_can_skip_redaction():
    rec = {"doc_id": "a.txt", "unit": "a.txt", "source_uri": "", "title": "A", "format": "txt", "metadata": {},
           "text": "Reach the team at team@marrowfield.example for anything about the harbor release plan."}
    out = clean_document(rec, CleanConfig(redact_pii=False), None)
    assert "team@marrowfield.example" in out.record["text"] and out.pii == {}
