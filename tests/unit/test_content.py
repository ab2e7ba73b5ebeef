"""Content checks and cleaning profiles: knowledge-base shapes are kept, garbage is dropped with its reason."""

from __future__ import annotations

import base64
import random

import pytest

from tasks.ingest.config import DEFAULT_BOILERPLATE, CleanConfig
from tasks.ingest.content import consent_banner, encoded_blob, keyboard_mash, misdecoded, placeholder
from tasks.ingest.filters import clean_document, compile_boilerplate, keep_match, profile_for, resolve_rules

BOILER = compile_boilerplate(DEFAULT_BOILERPLATE)
RNG = random.Random(11)

PRICING = "\n".join(["# Pricing", "", "| Plan | Price | Seats | Support |", "|---|---|---|---|"] + [
    f"| Plan {p} | ${n} per user per month | up to {s} seats | email support within {h} hours |"
    for p, n, s, h in (("Skiff", 0, 3, 72), ("Cutter", 29, 50, 24), ("Schooner", 59, 250, 8), ("Flagship", 99, 1000, 4),
                       ("Armada", 149, 5000, 1))])
CHANGELOG = "\n".join(
    f"## 5.{i}.0\n\n- Fixed a bug in the sync engine that dropped rows after a retry.\n"
    f"- Fixed a bug in the sync engine that left Harbor {i} paused.\n- Improved Beacon alert latency." for i in range(6))
FAQ = "\n\n".join(f"Q: How do I reset the password for the {a} account?\nA: Open Settings, choose {a}, then "
                  "select Reset password and follow the e-mail link." for a in ("Admin", "Billing", "Relay", "API",
                                                                               "Support", "Guest"))
TEMPLATE = "\n".join(f"Observation {i}: the study measured value {v:.2f} in trial {i}." for i, v in
                     enumerate([4.71, 3.98, 5.12, 4.44, 4.87, 5.03, 4.29, 4.66], 1))
LOG = "\n".join(f"2026-01-14T09:{m:02d}:00Z INFO relay.sync harbor=pg-main rows=1000 status=ok" for m in range(30))
KOREAN_FAQ = "\n\n".join(f"Q: {a} 계정의 비밀번호는 어떻게 재설정하나요?\nA: 설정에서 {a}를 선택한 뒤 비밀번호 재설정을 누르세요."
                         for a in ("관리자", "결제", "릴레이", "API"))
JAPANESE_NOTES = "定例会議メモ（1月14日）\n- 出席：佐藤、田中、キム\n- Relay 5.1 のリリースは金曜日に決定。\n- 次回は1月21日。"
LEGIT = {
    "pricing table": PRICING, "changelog": CHANGELOG, "faq": FAQ, "template report": TEMPLATE, "log": LOG,
    "one-line note": "Office hours: 9-5", "tiny note": "Wi-Fi: see fridge", "korean faq": KOREAN_FAQ,
    "japanese notes": JAPANESE_NOTES, "korean one-liner": "점심시간은 12시부터 1시까지입니다.",
    "checklist": "\n".join(["# Onboarding checklist"] + ["- [ ] Sign the laptop form", "- [ ] Sign the badge form",
                                                          "- [ ] Sign the NDA form", "Name: ____", "Date: ____"]),
    "code": "```python\ndef retry(fn, attempts=3):\n    for i in range(attempts):\n        try:\n            return fn()\n"
            "        except OSError:\n            continue\n```",
    "config": "```yaml\nrelay:\n  host: relay.internal\n  port: 8443\n  tls: true\nharbors:\n  - pg-main\n```",
    "cookie policy note": "We use cookies only for login sessions; analytics cookies are off by default.",
    "api key example": "Send `Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0` "
                       "with every request to the Tidewright API. Tokens expire after 24 hours. " * 2,
    "emoji": "Release party 🎉 Friday 18:00, roof terrace 🍕",
    "vietnamese": "Văn phòng mở cửa từ thứ Hai đến thứ Sáu, từ 9 giờ sáng đến 6 giờ chiều.",
}


GARBAGE = {
    "utf16 soup": (b"This is a test of the emergency broadcast system.".decode("utf-16-le", "replace"),
                   "misdecoded"),
    "latin-1 control soup": (bytes(RNG.randrange(256) for _ in range(60)).decode("latin-1"), "misdecoded"),
    "base64": (base64.b64encode(bytes(RNG.randrange(256) for _ in range(900))).decode(), "encoded_blob"),
    "data uri": ("data:image/png;base64," + base64.b64encode(bytes(range(200))).decode(), "encoded_blob"),
    "minified js": ('!function(e,t){"object"==typeof exports&&"undefined"!=typeof module?module.exports=t():'
                    '"function"==typeof define&&define.amd?define(t):(e=e||self).X=t()}(this,function(){'
                    '"use strict";var n={a:1,b:[2,3]};return n});' * 12, "minified_code"),
    "keyboard mash": ("asdfjkl;asdfjkl qwertyuiop sdfgsdfg hjkhjk", "keyboard_mash"),
    "home-row mash": ("asdf asdf jkl; fjfjfj dkdkdk lkjh", "keyboard_mash"),
    "jamo mash": ("ㅁㄴㅇㄹㅁㄴㅇㄹ ㅁㄴㅇㄹ", "keyboard_mash"),
    "held key": ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "keyboard_mash"),
    "lorem spam": ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor. " * 50, "placeholder"),
    "todo": ("TODO", "placeholder"),
    "coming soon": ("Coming soon!", "placeholder"),
    "cookie banner": ("We use cookies to improve your experience on our website. By continuing to browse, you agree to "
                      "our use of cookies.\nAccept all cookies\nReject all\nManage preferences", "consent_banner"),
    "symbols": ("=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=\n*****************\n#$%^&*()_+#$%^&*()_+", "mostly_symbols"),
    "boilerplate only": ("All rights reserved.\nSkip to content\nBack to top", "boilerplate_only"),
    "control chars": ("\x01\x02\x03 header \x04\x05\x06\x07\x08", "misdecoded"),
}


def rec(text: str, uri: str = "file:///kb/doc.md", doc_id: str = "kb/doc.md", fmt: str = "md") -> dict:
    return {"doc_id": doc_id, "unit": f"src/{doc_id}", "source_uri": uri, "title": "", "text": text,
            "metadata": {}, "format": fmt}


@pytest.mark.parametrize("name", sorted(LEGIT))
def test_knowledge_profile_keeps_every_legitimate_shape(name):
    out = clean_document(rec(LEGIT[name]), CleanConfig(), BOILER)
    assert out.reason is None and out.profile == "knowledge", out.reason


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_is_dropped_with_its_reason_in_both_profiles(name):
    text, code = GARBAGE[name]
    for uri in ("file:///kb/doc.md", "https://example.com/doc"):
        out = clean_document(rec(text, uri), CleanConfig(), BOILER)
        assert out.reason is not None and out.reason.split(":", 1)[0] == code, (uri, out.reason)


def test_web_profile_keeps_todays_rules():
    """http(s) documents get the Gopher rules with their thresholds: the shapes the knowledge profile keeps on
    purpose are what they were made to drop."""
    web = {name: clean_document(rec(LEGIT[name], "https://example.com/x"), CleanConfig(), BOILER).reason
           for name in ("pricing table", "changelog", "one-line note", "template report")}
    assert web["one-line note"].startswith("too_short: 15 non-space characters < 50")
    assert web["pricing table"].startswith(("repeated_ngrams", "repeated_lines"))
    assert all(web.values()), web
    rules = resolve_rules(CleanConfig(), "web")
    assert rules.min_chars == 50 and rules.gopher_repetition and rules.repeated_lines and rules.long_words


def test_profile_choice_and_per_rule_switches():
    cfg = CleanConfig()
    assert profile_for(cfg, "https://x.example/a") == "web" and profile_for(cfg, "file:///a") == "knowledge"
    assert profile_for(cfg, "hf:squad/train") == "knowledge"
    assert profile_for(CleanConfig(profile="web"), "file:///a") == "web"
    # a rule set in the config applies whatever the profile; unset rules follow the profile
    forced = CleanConfig(gopher_repetition=True, min_chars=20)
    out = clean_document(rec(LEGIT["changelog"]), forced, BOILER)
    assert out.reason and out.reason.startswith("repeated_ngrams")
    assert clean_document(rec("Office hours: 9-5"), forced, BOILER).reason.startswith("too_short")
    off = CleanConfig(placeholders=False)
    assert clean_document(rec("TODO"), off, BOILER).reason is None
    assert clean_document(rec("TODO", "https://x.example/t"), off, BOILER).reason.startswith("too_short")


def test_keep_pattern_rescues_quality_filters_but_not_non_text():
    cfg = CleanConfig(keep=["notes/*", "*.log"])
    out = clean_document(rec("TODO", doc_id="notes/todo.md"), cfg, BOILER)
    assert out.reason is None and out.record["metadata"]["kept"] == {
        "pattern": "notes/*", "past": "placeholder: the whole text is 'todo'"}
    web = clean_document(rec(LEGIT["changelog"], "https://x.example/changes.log", "changes.log"), cfg, BOILER)
    assert web.reason is None and web.record["metadata"]["kept"]["past"].startswith("repeated_ngrams")
    for text, code in (GARBAGE["utf16 soup"], GARBAGE["symbols"], ("   ", "empty")):
        out = clean_document(rec(text, doc_id="notes/x.md"), cfg, BOILER)
        assert out.reason and out.reason.startswith(code) and "kept" not in out.record["metadata"]
    assert keep_match(["*.log"], "src/a/b.log", "a/b.log") == "*.log"
    assert keep_match(["a/*"], "src/a/b.md", "a/b.md") == "a/*"
    assert keep_match(["c/*"], "src/a/b.md", "a/b.md") is None
    assert keep_match(["kb.jsonl"], "src/kb.jsonl#r1", "kb.jsonl#r1") == "kb.jsonl"


def test_checks_have_thresholds_that_can_be_moved():
    assert placeholder("Lorem ipsum dolor sit amet consectetur " + "real words here " * 3) is None
    assert keyboard_mash("sdfg hjkl", max_mash_fraction=1.0) is None
    assert encoded_blob(GARBAGE["base64"][0], max_blob_fraction=1.01, max_random_fraction=1.01) is None
    assert misdecoded(GARBAGE["control chars"][0], max_bad_fraction=1.0) is None
    assert consent_banner(GARBAGE["cookie banner"][0], max_words=5) is None


def test_checks_judge_a_prefix_of_a_10mb_document():
    """Garbage is garbage from its first page: what comes after the sample does not change the verdict, so a
    10 MB document costs what its first 20,000 characters cost (a quadratic step would hit the test timeout)."""
    good = ("The Relay agent syncs every Harbor on schedule. 서울 사무소 안내. 東京オフィス。 " * 150_000)[:10_000_000]
    for check in (misdecoded, encoded_blob, keyboard_mash, placeholder, consent_banner):
        assert check(good) is None
    soup = GARBAGE["utf16 soup"][0] * 2000
    assert misdecoded(soup) and misdecoded(soup + good) and misdecoded(good[:30_000] + soup) is None


def test_data_files_are_not_judged_as_prose():
    """A CSV of hex test values, a list of hashes or a log of ids is what a program wrote on purpose."""
    hexes = "| seed | 0xdeadbeaf |\n|---|---|\n" + "\n".join(
        f"| {i} | 0x{RNG.getrandbits(32):08x} |" for i in range(1000))  # the shape of numpy's mt19937 test set
    sums = "\n".join(f"{RNG.getrandbits(256):064x}  tidewright-5.1.{i}.tar.gz" for i in range(40))
    for text in (hexes, sums):
        for fmt in ("md", "csv", "log"):
            assert clean_document(rec(text, fmt=fmt), CleanConfig(), BOILER).reason is None, (fmt, text[:40])
    idents = " ".join(["strncpy fprintf pthrd xcvbn sdfgh mkdtmp rvwxz"] * 20)  # unspellable as prose
    assert clean_document(rec(idents, fmt="md"), CleanConfig(), BOILER).reason.startswith("keyboard_mash")
    for fmt in ("csv", "xlsx", "log", "code"):
        assert clean_document(rec(idents, fmt=fmt), CleanConfig(), BOILER).reason is None, fmt
