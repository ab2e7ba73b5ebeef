"""Feedback review: every inbox record gets one fate, reviewers accept or reject, accepted pairs reach the SFT data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.serve import feedback
from tasks.serve.config import BLOCKED_ANSWER, NOT_FOUND_ANSWER, FeedbackConfig
from tasks.serve.requestlog import FEEDBACK, REQUESTS, SegmentWriter
from tasks.train.config import SFTDataConfig

AT = "2026-03-01T10:00:{:02d}.000Z"


def request(ws, rid: str, question: str, answer: str | None = "The answer.", **over) -> None:
    SegmentWriter(ws, REQUESTS).append({
        "request_id": rid, "at": AT.format(0), "question": question, "answer": answer, "not_found": False,
        "blocked": False, "model": "champion-v1", "index_version": "i1", "guardrails": [],
        "sources": [{"doc_id": "handbook/a.md", "source_uri": "file:///a.md", "title": "A", "section": "A",
                     "score": 0.8}, {"doc_id": "handbook/b.md", "source_uri": "file:///b.md", "title": "B",
                                     "section": "B", "score": 0.5}], **over})


def vote(ws, fid: str, rid: str, rating: str, correction: str | None = None, second: int = 1) -> None:
    SegmentWriter(ws, FEEDBACK).append({"feedback_id": fid, "request_id": rid, "at": AT.format(second),
                                        "rating": rating, "correction": correction, "comment": None})


@pytest.fixture
def inbox(ws, tmp_path):
    """One record per fate path; returns the SFT config whose Q/A file holds one already-known question."""
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"id": "qa-1", "question": "Where is the office?", "answer": "Lisbon"}) + "\n")
    request(ws, "r1", "How many days of leave do we get?", "Ten days.")
    request(ws, "r2", "Who approves travel?", "Your team lead.")
    request(ws, "r3", "What is the wifi password?", "Ask IT.")
    request(ws, "r4", "What is the boat called?", NOT_FOUND_ANSWER, not_found=True)
    request(ws, "r5", "How do I hack the VPN?", BLOCKED_ANSWER, blocked=True)
    request(ws, "r6", "Something refused", None, status=400)
    request(ws, "r7", "where is the OFFICE", "In Porto.")
    request(ws, "r8", "Describe the onboarding.", "It takes a week.")
    request(ws, "r9", "When is payday?", "On the 25th.")
    request(ws, "r10", "When is payday??", "On the 25th.")
    vote(ws, "fb1", "r1", "down", "Twenty-five days a year.", 1)
    vote(ws, "fb2", "r2", "up", second=2)
    vote(ws, "fb3", "r3", "down", "   ", 3)
    vote(ws, "fb4", "r4", "up", second=4)
    vote(ws, "fb5", "r5", "up", second=5)
    vote(ws, "fb6", "r6", "up", second=6)
    vote(ws, "fb7", "r1", "up", second=7)
    vote(ws, "fb8", "r7", "up", second=8)
    vote(ws, "fb9", "r8", "down", "step " * 200, 9)
    vote(ws, "fb10", "nope", "up", second=10)
    vote(ws, "fb11", "r9", "up", second=11)
    vote(ws, "fb12", "r10", "up", second=12)
    SegmentWriter(ws, FEEDBACK).append({"feedback_id": "fb13", "request_id": "r9", "at": AT.format(13),
                                        "rating": "meh"})
    return SFTDataConfig(qa_paths=[str(qa)], rag_context=False, max_length=64)


def test_every_feedback_record_ends_with_one_fate(ws, inbox):
    res = feedback.triage(ws, FeedbackConfig(), inbox)
    items = {it["feedback_id"]: it for it in feedback.list_items(ws)}
    assert len(items) == len(res["new"]) == 13
    fate = {fid: (it["status"], it["reason"].split(":", 1)[0]) for fid, it in items.items()}
    assert fate == {
        "fb1": ("pending", ""), "fb2": ("pending", ""), "fb3": ("rejected", "no_correction"),
        "fb4": ("rejected", "not_found"), "fb5": ("rejected", "blocked"), "fb6": ("rejected", "refused"),
        "fb7": ("duplicate", "duplicate_request"), "fb8": ("duplicate", "duplicate_question"),
        "fb9": ("quarantined", "too_long"), "fb10": ("quarantined", "unknown_request"),
        "fb11": ("pending", ""), "fb12": ("duplicate", "duplicate_question"), "fb13": ("quarantined", "malformed"),
    }
    assert items["fb1"]["question"] == "How many days of leave do we get?"
    assert items["fb1"]["answer"] == "Twenty-five days a year." and items["fb2"]["answer"] == "Your team lead."
    assert items["fb1"]["doc_ids"] == ["handbook/a.md", "handbook/b.md"] and items["fb1"]["reviewed_at"] is None
    assert "conflicting up vote" in items["fb7"]["reason"] and "qa.jsonl#qa-1" in items["fb8"]["reason"]
    assert "fb11" in items["fb12"]["reason"] and items["fb3"]["reviewed_by"] == "triage"
    assert res["counts"] == {"pending": 3, "accepted": 0, "rejected": 4, "duplicate": 3, "quarantined": 3}
    before = feedback.review_path(ws).read_text()
    again = feedback.triage(ws, FeedbackConfig(), inbox)  # idempotent: nothing new, nothing rewritten differently
    assert again["new"] == [] and feedback.review_path(ws).read_text() == before
    request(ws, "r11", "Is there a gym?", "Yes, on floor 2.")
    vote(ws, "fb14", "r11", "up", second=14)
    vote(ws, "fb15", "r2", "down", "The department head.", 15)  # a later vote on a pending request
    later = {it["feedback_id"]: it["status"] for it in feedback.triage(ws, FeedbackConfig(), inbox)["new"]}
    assert later == {"fb14": "pending", "fb15": "duplicate"}


def test_accept_and_reject_regenerate_the_accepted_pairs(ws, inbox):
    feedback.triage(ws, FeedbackConfig(), inbox)
    assert [it["feedback_id"] for it in feedback.accept(ws, ["fb1"], note="checked the handbook")] == ["fb1"]
    assert feedback.accept(ws, ["fb1"]) == []  # accepting twice changes nothing
    lines = [json.loads(x) for x in feedback.accepted_path(ws).read_text().splitlines()]
    assert lines == [{"id": "feedback-r1", "question": "How many days of leave do we get?",
                      "answer": "Twenty-five days a year.", "doc_id": "handbook/a.md",
                      "doc_ids": ["handbook/a.md", "handbook/b.md"], "source": "feedback", "request_id": "r1",
                      "feedback_id": "fb1", "accepted_at": lines[0]["accepted_at"]}]
    item = feedback.list_items(ws, "accepted")[0]
    assert item["note"] == "checked the handbook" and item["reviewed_by"] == "reviewer" and item["reviewed_at"]
    feedback.reject(ws, ["fb2", "fb1"], "answer is outdated")
    assert feedback.accepted_path(ws).read_text() == "" and feedback.accepted_count(ws) == 0
    rejected = {it["feedback_id"]: it["reason"] for it in feedback.list_items(ws, "rejected")}
    assert rejected["fb1"] == rejected["fb2"] == "reviewer: answer is outdated"
    done = feedback.accept(ws, all_pending=True)  # fb11 only: a reviewer's rejection is not undone by --all-pending
    assert [it["feedback_id"] for it in done] == ["fb11"] and feedback.accepted_count(ws) == 1
    feedback.accept(ws, ["fb1"])  # but can be undone by name
    assert feedback.accepted_count(ws) == 2
    with pytest.raises(ValueError, match="no feedback item 'zz'"):
        feedback.accept(ws, ["zz"])
    with pytest.raises(ValueError, match="fb8 is duplicate"):
        feedback.accept(ws, ["fb8"])
    with pytest.raises(ValueError, match="rejected by triage"):
        feedback.reject(ws, ["fb3"], "x")
    with pytest.raises(ValueError, match="needs a reason"):
        feedback.reject(ws, ["fb1"], " ")


def test_auto_accept_and_upvotes_off(ws, inbox):
    feedback.triage(ws, FeedbackConfig(auto_accept=True, use_upvoted_answers=False), inbox)
    status = {it["feedback_id"]: (it["status"], it["reviewed_by"]) for it in feedback.list_items(ws)}
    assert status["fb1"] == ("accepted", "auto_accept")
    assert status["fb2"][0] == "rejected" and status["fb11"][0] == "rejected"
    assert feedback.list_items(ws)[1]["reason"].startswith("upvotes_off")
    assert [json.loads(x)["id"] for x in feedback.accepted_path(ws).read_text().splitlines()] == ["feedback-r1"]


def test_feedback_review_to_sft_dataset_with_provenance(ws, tmp_path, base_model_dir):
    from tasks.core.workspace import read_jsonl
    from tasks.train.model import load_tokenizer
    from tasks.train.sft import build_sft_dataset

    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"id": f"qa-{i}", "question": f"What is rule number {i}?",
                                      "answer": f"Rule {i}."}) + "\n" for i in range(6)))
    cfg = SFTDataConfig(qa_paths=[str(qa)], rag_context=False, max_length=128)
    tok = load_tokenizer(base_model_dir)
    without = build_sft_dataset(ws, cfg, tok, "tok", "run-0")
    request(ws, "req-42", "How many days of leave do we get?", "Ten days.")
    vote(ws, "fb1", "req-42", "down", "Twenty-five days a year.")
    request(ws, "req-43", "What is rule number 1?", "Rule one.")  # already in the Q/A file: a duplicate
    vote(ws, "fb2", "req-43", "up", second=2)
    feedback.triage(ws, FeedbackConfig(), cfg, tokenizer=tok)
    assert [it["status"] for it in feedback.list_items(ws)] == ["pending", "duplicate"]
    assert build_sft_dataset(ws, cfg, tok, "tok", "run-1").version == without.version  # pending: not yet data
    feedback.accept(ws, ["fb1"])
    res = build_sft_dataset(ws, cfg, tok, "tok", "run-2")
    assert res.version != without.version and res.counts["accepted"] == 7
    rows = [r for s in ("train", "validation", "test") for r in read_jsonl(Path(res.path) / f"{s}.jsonl")]
    fb = [r for r in rows if r["source"] == "feedback"]
    assert len(fb) == 1 and fb[0]["request_id"] == "req-42" and fb[0]["id"] == "feedback-req-42"
    assert fb[0]["messages"][-1] == {"role": "assistant", "content": "Twenty-five days a year."}
    assert fb[0]["doc_id"] == "handbook/a.md" and {r["source"] for r in rows} == {"qa", "feedback"}
    manifest = {m["unit"]: m for m in read_jsonl(Path(res.path) / "manifest.jsonl")}
    line = manifest["feedback/accepted.jsonl#feedback-req-42"]
    assert line["fate"] == "accepted" and line["source"] == "feedback" and line["request_id"] == "req-42"
    assert manifest["qa.jsonl#qa-0"]["source"] == "qa"
    off = build_sft_dataset(ws, cfg.model_copy(update={"include_feedback": False}), tok, "tok", "run-3")
    assert off.version == without.version


def test_retraining_policy_counts_accepted_feedback_pairs(ws, tmp_path):
    from tasks.core.records import write_records
    from tasks.core.workspace import atomic_write_json, write_jsonl, write_pointer
    from tasks.train import registry
    from tasks.train.config import RetrainPolicy
    from tasks.train.policy import decide

    write_records(ws.dataset_dir("docs") / "v1" / "records.parquet", [
        {"doc_id": "d", "unit": "d", "source_uri": "file:///d", "title": "d", "text": "t" * 60, "metadata": {},
         "content_hash": "h", "raw_hash": "h", "format": "md", "collected_at": "2026-01-01T00:00:00Z"}])
    write_pointer(ws.dataset_dir("docs") / "latest", "v1")
    (tmp_path / "adapter").mkdir()
    rec = registry.register(ws, {"run_id": "r1", "adapter_dir": str(tmp_path / "adapter"), "base_model": "m"})
    registry.promote(ws, rec["version"], "test")
    atomic_write_json(ws.models / "r1" / "meta.json", {"docs_dataset_version": "v1", "dataset": "sft",
                                                       "dataset_version": "s1"})
    # the champion's dataset read 4 Q/A lines and 1 feedback pair; now 5 Q/A lines and 3 feedback pairs
    atomic_write_json(ws.dataset_dir("sft") / "s1" / "stats.json", {"counts": {"seen": 5}})
    write_jsonl(ws.dataset_dir("sft") / "s1" / "manifest.jsonl", [{"unit": "u", "source": "feedback"}])
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(f'{{"question": "q{i}", "answer": "a"}}\n' for i in range(5)))
    write_jsonl(feedback.accepted_path(ws), [{"id": f"feedback-r{i}", "question": f"f{i}", "answer": "a"}
                                             for i in range(3)])
    data = SFTDataConfig(qa_paths=[str(qa)])
    grown = decide(ws, RetrainPolicy(min_changed_fraction=0.5, min_new_examples=3), data)
    assert grown["retrain"] and grown["reasons"] == ["3 new Q/A lines (incl. 2 accepted feedback pairs) (threshold 3)"]
    assert grown["numbers"]["feedback_pairs_now"] == 3 and grown["numbers"]["qa_lines_now"] == 8
    off = decide(ws, RetrainPolicy(min_changed_fraction=0.5, min_new_examples=3),
                 data.model_copy(update={"include_feedback": False}))
    assert not off["retrain"] and "0 new Q/A lines (threshold 3)" in off["reasons"][1]


def test_feedback_cli_list_accept_reject_json(ws, tmp_path, monkeypatch, capsys, base_model_dir):
    from flows.cli import main

    monkeypatch.setenv("RAGTUNE_HOME", str(ws.root))
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "Where is the office?", "answer": "Lisbon"}) + "\n")
    (ws.root / "config.yaml").write_text(f"train:\n  base_model: {base_model_dir}\n  data:\n"
                                         f"    qa_paths: [{qa}]\n    rag_context: false\n")
    request(ws, "r1", "Who approves travel?", "Your team lead.")
    vote(ws, "fb1", "r1", "up")
    request(ws, "r2", "Is there a gym?", "Yes.")
    vote(ws, "fb2", "r2", "up", second=2)

    def run(*argv: str) -> tuple[int, dict]:
        code = main(["feedback", *argv])
        return code, json.loads(capsys.readouterr().out)

    code, out = run("list", "--json")
    assert code == 0 and out["ok"] and out["new"] == 2 and out["counts"]["pending"] == 2
    assert [it["feedback_id"] for it in out["items"]] == ["fb1", "fb2"]
    code, out = run("accept", "fb1", "--note", "ok", "--json")
    assert code == 0 and out["accepted"] == ["fb1"] and out["counts"]["accepted"] == 1
    code, out = run("--json", "reject", "fb2", "--reason", "too vague")
    assert code == 0 and out["rejected"] == ["fb2"]
    code, out = run("list", "--status", "accepted", "--json")
    assert out["new"] == 0 and [it["feedback_id"] for it in out["items"]] == ["fb1"]
    code, out = run("accept", "nope", "--json")
    assert code == 1 and out == {"ok": False, "error": "no feedback item 'nope' (see ragtune feedback list)"}


def test_a_later_vote_of_the_same_client_replaces_its_pending_pair(ws, inbox):
    feedback.triage(ws, FeedbackConfig(), inbox)
    # fb2 (up, pending) is replaced by the same client's correction; fb1 is accepted first and stays
    feedback.accept(ws, ["fb1"])
    SegmentWriter(ws, FEEDBACK).append({"feedback_id": "fb20", "request_id": "r2", "at": AT.format(20),
                                        "rating": "down", "correction": "The department head.", "comment": None,
                                        "client": "key:k1", "replaces": "fb2"})
    SegmentWriter(ws, FEEDBACK).append({"feedback_id": "fb21", "request_id": "r1", "at": AT.format(21),
                                        "rating": "down", "correction": "Thirty days.", "comment": None,
                                        "client": "key:k1", "replaces": "fb1"})
    new = {it["feedback_id"]: it for it in feedback.triage(ws, FeedbackConfig(), inbox)["new"]}
    items = {it["feedback_id"]: it for it in feedback.list_items(ws)}
    assert items["fb2"]["status"] == "duplicate" and items["fb2"]["reason"].startswith("replaced: ")
    assert new["fb20"]["status"] == "pending" and new["fb20"]["answer"] == "The department head."
    assert items["fb1"]["status"] == "accepted"  # a reviewer's decision is not reopened by a later vote
    assert new["fb21"]["status"] == "duplicate" and "duplicate_request" in new["fb21"]["reason"]


def test_feedback_list_escapes_control_characters_for_the_reviewer(ws, capsys):
    from flows.cli.render import print_review_items

    item = {"feedback_id": "fb1", "request_id": "r1", "rating": "down", "status": "pending", "reason": "",
            "question": "Who approves travel?", "answer": "\x1b[31mRED\x1b[0m the \u202eCEO\x07",
            "comment": "\x1b]0;owned\x07"}
    print_review_items([item])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b[31mRED\\x1b[0m the \\u202eCEO\\x07" in out and "\\x1b]0;owned" in out
