"""Question generation from a corpus's structure, the checks every pair passes, document splits and reviews."""

from __future__ import annotations

import pytest

from tasks.train.questions import filters
from tasks.train.questions.build import _cap_per_document, pair_id
from tasks.train.questions.generator import parse_pair
from tasks.train.questions.review import apply_reviews, status_of
from tasks.train.questions.structure import changelog, definitions, faq, generate, headings, settings, tables
from tasks.train.splits import split_documents

FAQ_MD = """# Office FAQ

## Can I bring my dog?
Dogs are welcome on Fridays in the Lisbon office. Please keep them on a lead.

**Q. 주차는 가능한가요?**
A. 네. 지하 2층에 방문자 주차 공간이 있습니다.

Q: How do I book a desk?
A: Book it in Deskly before 10:00 on the day.
"""

FAQ_TXT = """IT HELPDESK FAQ

How often is my laptop replaced?
  Laptops are replaced every 3 years, or sooner if they fail.

Where is the printer?
  On the 3rd floor next to the kitchen.
"""

TABLE = """# Relay

## Configuration

| Setting | Default | Meaning |
|---|---|---|
| `max_tasks` | 8 | Steps run at the same time |
| `proxy_url` | empty | HTTP proxy for outbound traffic |
"""

CHANGELOG = """# Changelog

## 2.1.0 - 2024-03-01
- Added SMS alerts for Beacons.
- Fixed a crash on start.

1.4 - 3 July 2018
  Scheduled flows gained cron syntax.
"""

SETTINGS = """# Deploying

- `RELAY_TOKEN`: the token from Settings > Relays
- **log_level** = info

```yaml
region: eu-central
retries: 3  # per step
```

```python
timeout = 5
```
"""

PROSE = """# Glossary

Deck Call is our company-wide meeting every other Thursday. Gatehouse is required when you work abroad.
Laptops are replaced every 3 years. It is a good idea to lock your screen. The Logbook is the internal wiki.
"""


def spans_hold(text: str, title: str) -> list:
    found = generate(text, title)
    for c in found:
        assert text[c.start:c.end] == c.answer  # every answer is a span of the document
    return found


def test_faq_entries_in_markdown_plain_text_and_any_script():
    got = {c.question: c.answer for c in faq(FAQ_MD, "Office FAQ")}
    assert got["Can I bring my dog?"] == "Dogs are welcome on Fridays in the Lisbon office."
    assert got["주차는 가능한가요?"].startswith("네.")
    assert got["How do I book a desk?"] == "Book it in Deskly before 10:00 on the day."
    txt = {c.question: c.answer for c in faq(FAQ_TXT, "IT helpdesk FAQ")}
    assert txt == {"How often is my laptop replaced?": "Laptops are replaced every 3 years, or sooner if they fail.",
                   "Where is the printer?": "On the 3rd floor next to the kitchen."}
    spans_hold(FAQ_MD, "Office FAQ")


def test_table_rows_become_header_and_key_questions():
    got = {c.question: c.answer for c in tables(TABLE, "Relay")}
    assert got["What is the default for max_tasks in Configuration?"] == "8"
    assert got["What is the meaning for proxy_url in Configuration?"] == "HTTP proxy for outbound traffic"
    assert len(got) == 4
    spans_hold(TABLE, "Relay")


def test_changelog_entries_give_release_dates_and_changes():
    got = {c.question: c.answer for c in changelog(CHANGELOG, "Changelog")}
    assert got["When was version 2.1.0 released, according to Changelog?"] == "2024-03-01"
    assert got["What changed in version 2.1.0, according to Changelog?"] == "Added SMS alerts for Beacons."
    assert got["When was version 1.4 released, according to Changelog?"] == "3 July 2018"
    assert got["What changed in version 1.4, according to Changelog?"] == "Scheduled flows gained cron syntax."
    spans_hold(CHANGELOG, "Changelog")


def test_settings_from_bullets_and_config_blocks_only():
    got = {c.question: c.answer for c in settings(SETTINGS, "Deploying")}
    assert got == {"What is RELAY_TOKEN set to in Deploying?": "the token from Settings > Relays",
                   "What is log_level set to in Deploying?": "info",
                   "What is region set to in Deploying?": "eu-central",
                   "What is retries set to in Deploying?": "3"}  # not `timeout` of a Python block
    spans_hold(SETTINGS, "Deploying")


def test_definitions_but_not_statements_about_a_subject():
    got = {c.question: c.answer for c in definitions(PROSE, "Glossary")}
    assert got["What is Deck Call?"] == "our company-wide meeting every other Thursday"
    assert got["What is the Logbook?"] == "the internal wiki"
    assert not any(q.startswith(("What is Gatehouse", "What are Laptops", "What is It")) for q in got)


def test_headings_pair_with_the_first_sentence_under_them():
    text = "# Guide\n\n## Rate limits\n\nEach token can make 600 requests per minute. Bursts are allowed.\n\n" \
           "## Setup\n\nThe steps are:\n\n- install\n"
    got = {c.question: c.answer for c in headings(text, "API guide")}
    assert got == {"What does API guide say about rate limits?": "Each token can make 600 requests per minute."}


def test_one_answer_span_is_claimed_once_with_faq_first():
    found = generate(FAQ_MD, "Office FAQ")
    assert [c.kind for c in found].count("faq") == 3
    assert len({(c.start, c.end) for c in found}) == len(found)


def test_each_check_names_its_reason():
    assert filters.check_length("Why?", "x", 300).startswith("too_short")
    assert filters.check_length("What is the limit?", "y" * 301, 300).startswith("too_long")
    assert filters.check_length("What is the limit?", "!!", 300).startswith("empty_answer")
    assert filters.check_support("600 requests", "Each token can make 600 requests per minute.", 0.8) == (None, "span")
    assert filters.check_support("600 requests per minute token", "Each token can make 600 requests per minute.",
                                 0.8)[1].startswith("overlap")
    assert filters.check_support("the moon", "Each token can make 600 requests.", 0.8)[0].startswith("unsupported")
    assert filters.check_quotes_answer("Is the limit 600 requests?", "600 requests").startswith("quotes_answer")
    assert filters.check_quotes_answer("What is the limit?", "600 requests") is None
    assert filters.near_duplicates(["How do I book a desk?", "How do I book a desk??", "Where is the printer?",
                                    "how do i book a desk"], 0.8) == [None, 0, None, 0]
    templated = ["What is the default for max_jobs in Settings?", "What is the default for proxy_url in Settings?",
                 "What's the default for max_jobs in Settings?"]
    assert filters.near_duplicates(templated, 0.6, ["6", "none", "6"]) == [None, None, 0]  # other subject, other answer
    assert filters.check_round_trip("a.md", ["b.md", "a.md"], 2) is None
    assert filters.check_round_trip("a.md", ["b.md", "c.md", "a.md"], 2).startswith("round_trip")


def test_document_splits_are_deterministic_disjoint_and_never_empty():
    docs = [f"doc-{i}.md" for i in range(40)]
    a = split_documents(docs, 0.1, 0.2)
    assert a == split_documents(list(reversed(docs)), 0.1, 0.2)
    assert set(a.values()) == {"train", "validation", "test"}
    small = split_documents(["a.md", "b.md", "c.md"], 0.1, 0.2)
    assert sorted(small.values()) == ["test", "train", "validation"]  # a small corpus still has a test document
    assert split_documents(["a.md", "b.md"], 0.1, 0.2)  # fewer than three: splits by hash alone


def test_the_per_document_cap_takes_kinds_in_turn():
    live = [{"doc_id": "d", "kind": "table", "fate": "accepted"} for _ in range(6)]
    live += [{"doc_id": "d", "kind": "faq", "fate": "accepted"}, {"doc_id": "d", "kind": "heading", "fate": "accepted"}]
    _cap_per_document(live, 4)
    kept = [c["kind"] for c in live if c["fate"] == "accepted"]
    assert sorted(kept) == ["faq", "heading", "table", "table"]
    assert all(c["reason"].startswith("over_cap") for c in live if c["fate"] != "accepted")


@pytest.mark.parametrize("reply, pair", [
    ('Sure! {"question": "What is Deck Call?", "answer": "the all-hands"}', ("What is Deck Call?", "the all-hands")),
    ("Question: Where is the printer?\nAnswer: On the 3rd floor.\nMore text", ("Where is the printer?",
                                                                               "On the 3rd floor.")),
    ('{"question": "", "answer": "x"}', None),
    ("I cannot help with that.", None),
])
def test_generator_replies_are_parsed_or_refused(reply, pair):
    assert parse_pair(reply) == pair


def test_reviews_override_the_checks_and_keep_their_verdict():
    lines = [{"pair_id": "p1", "fate": "filtered", "reason": "round_trip: not found"},
             {"pair_id": "p2", "fate": "accepted", "reason": "ok"}, {"pair_id": "p3", "fate": "duplicate",
                                                                     "reason": "near_duplicate: x"}]
    apply_reviews(lines, {"p1": {"decision": "accepted", "by": "ana", "at": "t", "reason": ""},
                          "p2": {"decision": "rejected", "by": "ana", "at": "t", "reason": "wrong answer"}})
    assert [status_of(m) for m in lines] == ["accepted", "rejected", "duplicate"]
    assert lines[0]["reason"] == "review: accepted by ana (checks said: round_trip: not found)"
    assert lines[1]["reason"] == "review: rejected by ana: wrong answer" and lines[1]["checks"] == "ok"
    apply_reviews(lines, {"p1": {"decision": "rejected", "by": "bo", "at": "t", "reason": "no"}})  # applied again
    assert lines[0]["checks"] == "round_trip: not found" and status_of(lines[0]) == "rejected"


def test_pair_ids_are_stable():
    assert pair_id("a.md", "Q?", "A") == pair_id("a.md", "Q?", "A") != pair_id("b.md", "Q?", "A")
