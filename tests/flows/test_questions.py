"""Training and evaluation data from a user's own corpus: no Q/A file needed, never the bundled sample's by accident.
A small knowledge base (not the sample) is ingested and indexed for real; questions are generated, checked against
their chunks and the served retriever, split by document, reviewed, and turned into the SFT dataset."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tasks.core.workspace import Workspace, read_jsonl

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

DOCS = {
    "faq.md": "# Office FAQ\n\n## Can I bring my dog to the office?\nDogs are welcome on Fridays in the Lisbon office.\n\n"
              "## Where do I park my bike?\nBikes go in the courtyard rack behind reception.\n\n"
              "## When is the office open?\nThe office opens at 07:30 and closes at 20:00 on weekdays.\n",
    "relay.md": "# Kestrel Relay\n\nKestrel Relay is the agent that runs jobs inside your network.\n\n## Settings\n\n"
                "| Setting | Default | Meaning |\n|---|---|---|\n| `max_jobs` | 6 | Jobs run at the same time |\n"
                "| `proxy_url` | none | Proxy for outbound traffic |\n| `heartbeat_s` | 45 | Seconds between heartbeats |\n",
    "changelog.md": "# Kestrel changelog\n\n## 3.2.0 - 2025-11-04\n- Added SMS alerts for watchers.\n\n"
                    "## 3.1.0 - 2025-06-17\n- Relays update themselves in a maintenance window.\n\n"
                    "## 3.0.0 - 2025-01-09\n- Removed the legacy XML job format.\n",
    "deploy.md": "# Deploying Kestrel\n\n- `KESTREL_TOKEN`: the token from Settings > Tokens\n- `KESTREL_REGION`: "
                 "eu-north\n\n```yaml\nretries: 4\nqueue: nightly-batch\n```\n",
    "glossary.md": "# Glossary\n\nA watcher is a rule that alerts when a job fails. The Ledger is the audit log of "
                   "every change. Quiet hours are the hours when no alert pages anyone.\n",
    "onboarding.md": "# Onboarding at Kestrel\n\n## Your first day\n\nYour buddy meets you at reception at 09:00.\n\n"
                     "## Laptops\n\nIT hands out laptops on the first morning, with a hardware key.\n\n"
                     "## Training\n\nEvery new joiner takes the security course in the first week.\n",
    "billing.md": "# Billing\n\n## Invoices\n\nInvoices are sent on the first working day of each month.\n\n"
                  "## Plans\n\n| Plan | Price | Seats |\n|---|---|---|\n| Sparrow | 9 EUR | 3 |\n| Falcon | 49 EUR | 25 |\n",
    "support.txt": "KESTREL SUPPORT FAQ\n\nHow do I reach support?\n  Write to the support desk in the app; we answer "
                   "within one working day.\n\nIs there phone support?\n  Phone support is part of the Falcon plan.\n",
}


@pytest.fixture(scope="module")
def corpus_ws(tmp_path_factory):
    """A workspace with the little knowledge base ingested and indexed (shared by this module's tests)."""
    from flows.index import index_flow
    from flows.ingest import ingest_flow
    from tasks.index.config import IndexConfig
    from tasks.ingest.config import CollectConfig, IngestConfig

    root = tmp_path_factory.mktemp("questions")
    src = root / "kb"
    src.mkdir()
    for name, text in DOCS.items():
        (src / name).write_text(text, encoding="utf-8")
    home = root / "ws"
    ingest_flow(IngestConfig(collect=CollectConfig(sources=[str(src)])), home=str(home))
    index_flow(IndexConfig(), home=str(home))
    return Workspace(home)


def test_a_user_corpus_never_falls_back_to_the_sample_questions(corpus_ws):
    from flows.questions import generation_needed
    from flows.train import train_flow
    from tasks.train.config import SFTDataConfig, TrainConfig
    from tasks.train.sft import NoQADataError, corpus_is_sample, qa_sources

    assert not corpus_is_sample(corpus_ws, SFTDataConfig())
    assert generation_needed(corpus_ws, SFTDataConfig())  # what the pipeline and the retraining flow ask first
    assert not generation_needed(corpus_ws, SFTDataConfig(questions="none"))
    with pytest.raises(NoQADataError, match="run `ragtune questions generate`"):
        qa_sources(corpus_ws, SFTDataConfig())
    with pytest.raises(NoQADataError):
        train_flow(TrainConfig(max_steps=1), home=str(corpus_ws.root))
    assert not corpus_ws.models.exists() or not list(corpus_ws.models.glob("*/meta.json"))


def test_every_generated_pair_has_one_fate_and_splits_by_document(corpus_ws):
    from flows.questions import questions_flow
    from tasks.train.config import QuestionsConfig

    out = questions_flow(QuestionsConfig(), home=str(corpus_ws.root))
    folder = Path(out["path"])
    manifest = read_jsonl(folder / "manifest.jsonl")
    assert len({m["unit"] for m in manifest}) == len(manifest) == out["counts"]["seen"]
    assert all(m["fate"] in ("accepted", "duplicate", "filtered") and m["reason"] for m in manifest)
    assert out["counts"]["accepted"] >= 10 and {m["kind"] for m in manifest} >= {"faq", "table", "changelog",
                                                                                   "setting", "definition"}
    chunks = {m["chunk_id"] for m in manifest}
    assert None not in chunks  # every pair cites the chunk that holds its answer
    pairs = read_jsonl(folder / "pairs.jsonl")
    docs_of = {s: {p["doc_id"] for p in pairs if p["split"] == s} for s in ("train", "validation", "test")}
    assert docs_of["test"] and docs_of["train"]
    assert not (docs_of["train"] & docs_of["test"]) and not (docs_of["train"] & docs_of["validation"])
    assert not (docs_of["validation"] & docs_of["test"])
    for m in manifest:
        if m["fate"] == "accepted":
            assert m["doc_id"] in m["retrieved"]  # the round trip: the served retriever finds its document
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["index"]["state"] and meta["documents"]["version"] and meta["git_commit"] is not None or True
    again = questions_flow(QuestionsConfig(), home=str(corpus_ws.root))
    assert again["reused"] and again["version"] == out["version"]


def test_generated_questions_feed_the_sft_dataset_without_the_sample(corpus_ws, base_model_dir):
    from flows.questions import questions_flow
    from tasks.train.config import QuestionsConfig, SFTDataConfig
    from tasks.train.model import load_tokenizer
    from tasks.train.sft import build_sft_dataset

    qs = questions_flow(QuestionsConfig(), home=str(corpus_ws.root))
    res = build_sft_dataset(corpus_ws, SFTDataConfig(), load_tokenizer(base_model_dir), "tok", "run-q1")
    manifest = read_jsonl(Path(res.path) / "manifest.jsonl")
    assert manifest and all(m["unit"].startswith(f"questions/{qs['version']}#") for m in manifest)
    assert all(m["source"] == "generated" for m in manifest)
    rows = {s: read_jsonl(Path(res.path) / f"{s}.jsonl") for s in ("train", "validation", "test")}
    pairs = {p["id"]: p for p in read_jsonl(Path(qs["path"]) / "pairs.jsonl")}
    for split, rs in rows.items():
        assert all(pairs[r["id"]]["split"] == split for r in rs)  # the document split is kept
    assert rows["test"] and not ({r["doc_id"] for r in rows["train"]} & {r["doc_id"] for r in rows["test"]})
    assert json.loads((Path(res.path) / "meta.json").read_text())["question_set"] == qs["version"]


def test_a_human_qa_file_stays_the_test_set_of_record(corpus_ws, base_model_dir, tmp_path):
    from flows.questions import questions_flow
    from tasks.train.config import QuestionsConfig, SFTDataConfig
    from tasks.train.model import load_tokenizer
    from tasks.train.sft import build_sft_dataset

    questions_flow(QuestionsConfig(), home=str(corpus_ws.root))
    human = tmp_path / "human.jsonl"
    human.write_text("".join(json.dumps({"id": f"h{i}", "question": q, "answer": a, "doc_id": d}) + "\n" for i, (q, a, d)
                             in enumerate([("How many jobs does a Relay run at once by default?", "6", "relay.md"),
                                           ("Which plan includes phone support?", "Falcon", "support.txt"),
                                           ("What time does the office open?", "07:30", "faq.md"),
                                           ("What does a Sparrow plan cost?", "9 EUR", "billing.md"),
                                           ("When are invoices sent?", "the first working day of each month",
                                            "billing.md"),
                                           ("What is the Ledger?", "the audit log of every change", "glossary.md")])))
    cfg = SFTDataConfig(qa_paths=[str(human)], test_fraction=0.4, validation_fraction=0.0)
    res = build_sft_dataset(corpus_ws, cfg, load_tokenizer(base_model_dir), "tok", "run-q2")
    test = read_jsonl(Path(res.path) / "test.jsonl")
    assert test and all(r["source"] == "qa" for r in test)  # generated pairs never enter the human test split
    train = read_jsonl(Path(res.path) / "train.jsonl")
    human_test_docs = {r["doc_id"] for r in test}
    assert not any(r["source"] == "generated" and r["doc_id"] in human_test_docs for r in train)
    held = [m for m in read_jsonl(Path(res.path) / "manifest.jsonl") if m["reason"].startswith("held_out")]
    assert held and all(m["fate"] == "filtered" for m in held)


def test_questions_review_from_the_command_line(corpus_ws, monkeypatch, capsys):
    from flows.cli import main

    monkeypatch.setenv("RAGTUNE_HOME", str(corpus_ws.root))

    def run(*argv: str) -> tuple[int, dict]:
        capsys.readouterr()
        code = main([*argv])
        return code, json.loads(capsys.readouterr().out or "{}")

    code, gen = run("questions", "generate", "--json")
    assert code == 0 and gen["ok"]
    code, listed = run("questions", "list", "--status", "set_aside", "--limit", "0", "--json")
    assert code == 0 and listed["version"] == gen["version"]
    code, accepted = run("questions", "list", "--status", "accepted", "--limit", "1", "--json")
    victim = accepted["items"][0]["pair_id"]
    code, rejected = run("questions", "reject", victim, "--reason", "wrong answer", "--json")
    assert code == 0 and rejected["version"] != gen["version"]
    assert rejected["counts"]["accepted"] == gen["counts"]["accepted"] - 1
    code, now = run("questions", "list", "--status", "rejected", "--json")
    assert [m["pair_id"] for m in now["items"]] == [victim] and "wrong answer" in now["items"][0]["reason"]
    if listed["items"]:  # a pair a check set aside can be accepted by a person
        rescued = listed["items"][0]["pair_id"]
        code, back = run("questions", "accept", rescued, "--json")
        assert code == 0 and back["counts"]["accepted"] == rejected["counts"]["accepted"] + 1
    code, err = run("questions", "reject", "nosuchpair", "--reason", "x", "--json")
    assert code == 1 and "nosuchpair" in err["error"]


class _Completions(BaseHTTPRequestHandler):
    """An OpenAI-compatible `/v1/chat/completions` stand-in for a remote generator (the test double of the
    endpoint, not of ragtune): it checks the key and answers with the passage's first sentence."""

    seen_keys: list[str] = []

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen_keys.append(self.headers.get("Authorization", ""))
        user = body["messages"][-1]["content"]
        doc = user.split("\n", 1)[0].removeprefix("Document: ")
        passage = user.split("Passage:\n", 1)[1]
        first = next(s for s in passage.replace("\n", " ").split(". ") if len(s.split()) > 3)
        reply = json.dumps({"question": f"What does {doc} say first?", "answer": first.strip().lstrip("#- ")})
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def test_an_openai_compatible_generator_adds_checked_pairs_and_its_key_is_never_written(corpus_ws, monkeypatch):
    from flows.questions import questions_flow
    from tasks.train.config import QuestionsConfig

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Completions)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    key = "sk-test-" + os.urandom(6).hex()
    monkeypatch.setenv("KESTREL_LLM_KEY", key)
    try:
        cfg = QuestionsConfig(generator=f"openai:http://127.0.0.1:{server.server_port}/v1", generator_model="m1",
                              api_key_env="KESTREL_LLM_KEY", generator_chunks=6)
        out = questions_flow(cfg, home=str(corpus_ws.root))
    finally:
        server.shutdown()
    assert _Completions.seen_keys and set(_Completions.seen_keys) == {f"Bearer {key}"}
    manifest = read_jsonl(Path(out["path"]) / "manifest.jsonl")
    model = [m for m in manifest if m["kind"] == "model"]
    assert len(model) == 6 and all(m["fate"] and m["reason"] for m in model)
    assert any(m["fate"] == "accepted" for m in model)
    meta = json.loads((Path(out["path"]) / "meta.json").read_text())
    assert meta["generator"].endswith("#m1") and meta["config"]["api_key_env"] == "KESTREL_LLM_KEY"
    for p in corpus_ws.root.rglob("*"):
        if p.is_file() and p.stat().st_size < 5_000_000:
            assert key.encode() not in p.read_bytes(), p
