"""The whole loop under Prefect on the bundled sample (tiny step counts): ingest, index, train, evaluate, gate,
promote; a learning-rate-0 candidate is never promoted; the answer cache hits and invalidates; generation and
likelihoods are batch-invariant."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

# short prompts and a small validation split: training on 2 CPU cores costs ~3 s per 1,000 tokens
TINY_TRAIN = {"max_steps": 4, "eval_steps": 4, "save_steps": 4, "batch_size": 4,
              "data": {"context_k": 1, "context_chars": 160, "validation_fraction": 0.05}}
TINY_EVAL = {"max_examples": 8, "max_new_tokens": 12, "bootstrap_samples": 200, "batch_size": 8}
TINY_COMPARE = {"max_examples": 8, "max_new_tokens": 12, "bootstrap_samples": 200, "batch_size": 8}


@pytest.fixture(scope="module")
def loop(tmp_path_factory, prefect_harness, base_model_dir):
    """`ragtune demo`'s pipeline with tiny settings, in a workspace of its own (RAGTUNE_HOME for the module)."""
    from flows.demo import run_demo

    home = tmp_path_factory.mktemp("loop") / "ws"
    old = os.environ.get("RAGTUNE_HOME")
    os.environ["RAGTUNE_HOME"] = str(home)
    try:
        out = run_demo(train={**TINY_TRAIN, "base_model": base_model_dir}, evaluate=TINY_EVAL, compare=TINY_COMPARE)
        yield home, out
    finally:
        if old is None:
            os.environ.pop("RAGTUNE_HOME", None)
        else:
            os.environ["RAGTUNE_HOME"] = old


def test_demo_runs_the_whole_loop_and_records_the_decision(loop):
    from datasets import Dataset

    from tasks.core.workspace import Workspace, read_json
    from tasks.train import registry

    home, out = loop
    ev = out["evaluation"]
    assert out["dataset_version"] and out["index_version"] and out["candidate"] == "v1"
    assert set(out["metrics"]) == {"base", "candidate"} and ev["examples"] == 8 and ev["reference"] == "base"
    for system in ("base", "candidate"):
        assert {"token_f1", "exact_match", "rouge_l", "bleu", "perplexity", "unsafe"} <= set(out["metrics"][system])
    f1 = out["comparisons"]["base"]["token_f1"]
    assert f1["ci_low"] <= f1["diff"] <= f1["ci_high"]
    assert out["retrieval"]["questions"] > 0 and 0 <= out["retrieval"]["ndcg@10"] <= 1
    cal = out["calibration"]  # the server's not-found threshold, from the test + validation questions
    assert cal["questions"] > 0 and cal["off_topic"] == 42 and 0 <= cal["threshold"] < 1
    assert cal["chosen"]["accuracy"] >= cal["no_threshold"]["accuracy"] and (home / "serve" / "calibration.json").exists()
    decision = ev["decision"]
    assert out["promoted"] == decision["passed"]  # promoted exactly when every rule passed
    assert out["champion"] == ("v1" if decision["passed"] else None)
    state = registry.aliases(Workspace(home))
    assert state["champion"] == out["champion"] and (state["archived"] == ([] if decision["passed"] else ["v1"]))
    folder = Path(ev["path"])
    examples = Dataset.from_parquet(str(folder / "examples.parquet"))
    assert len(examples) == 8 and {"question", "reference", "answer_base", "answer_candidate",
                                   "token_f1_candidate"} <= set(examples.column_names)
    html = Path(out["report"]).read_text(encoding="utf-8")
    assert "Gate:" in html and "data:image/png;base64," in html and "Answers side by side" in html
    meta = read_json(folder / "metrics.json")
    assert meta["safety"]["sha256"] and meta["git_commit"] is not None and meta["decision"] == decision


def test_demo_compares_retrieval_fine_tuning_and_both(loop):
    import json

    from tasks.evaluate.attribution import KINDS
    from tasks.evaluate.compare.verdict import describe

    _, out = loop
    cmp = out["comparison"]
    assert set(cmp["cells"]) == {"base/closed", "tuned/closed", "base/rag", "tuned/rag"} and cmp["examples"] == 8
    for key, cell in cmp["cells"].items():
        assert {"token_f1", "exact_match", "rouge_l", "bleu", "perplexity"} <= set(cell["metrics"])
        f = cell["failures"]
        assert sum(f["counts"].values()) == f["wrong"] <= 8 and set(f["counts"]) == set(KINDS)
        if key.endswith("/closed"):  # no passages: a wrong closed-book answer is verbose or a knowledge miss
            assert f["counts"]["reader"] == f["counts"]["retrieval_chunk"] == 0
        else:
            assert f["counts"]["closed_book"] == 0
        assert cell["cost"]["prompt_tokens"] > 0 and cell["cost"]["seconds_per_answer"] > 0
    assert cmp["cells"]["base/rag"]["cost"]["prompt_tokens"] > cmp["cells"]["base/closed"]["cost"]["prompt_tokens"]
    for key in ("tuned/closed", "base/rag", "tuned/rag"):  # every cell against base closed-book, with an interval
        c = cmp["comparisons"][f"{key} vs base/closed"]["token_f1"]
        assert c["ci_low"] <= c["diff"] <= c["ci_high"]
    for name in ("retrieval", "fine_tuning_with_retrieval", "fine_tuning_alone"):
        assert describe(cmp["effects"][name]) in cmp["verdict"]  # the sentence carries the measured intervals
    assert cmp["tuned"]["adapter_bytes"] > 0 and cmp["tuned"]["train_runtime_s"] > 0
    html = Path(cmp["report"]).read_text(encoding="utf-8")
    assert "RAG, fine-tuning or both?" in html and "data:image/png;base64," in html and "Where answers fail" in html
    lines = (Path(cmp["path"]) / "examples.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 8 and "failure" in json.loads(lines[0])["tuned/rag"]
    ev = out["evaluation"]  # the evaluation attributes its failures the same way
    assert set(ev["failures"]) == {"base", "candidate"}
    assert "Where answers fail" in Path(out["report"]).read_text(encoding="utf-8") or not any(
        f["wrong"] for f in ev["failures"].values())


def test_rerun_reuses_the_run_and_the_evaluation(loop, base_model_dir):
    from flows.demo import run_demo
    from tasks.core.workspace import Workspace
    from tasks.train import registry

    home, first = loop
    history = registry.history(Workspace(home))
    again = run_demo(train={**TINY_TRAIN, "base_model": base_model_dir}, evaluate=TINY_EVAL, compare=TINY_COMPARE)
    assert again["comparison"]["reused"] and again["comparison"]["compare_id"] == first["comparison"]["compare_id"]
    assert again["train"]["run_id"] == first["train"]["run_id"] and not again["train"]["trained"]
    assert again["evaluation"]["reused"] and again["evaluation"]["eval_id"] == first["evaluation"]["eval_id"]
    assert again["index"]["mode"] == "unchanged" and again["ingest"]["reused"]
    assert again["champion"] == first["champion"] and not again["promoted"]
    assert registry.history(Workspace(home)) == history  # no alias moved, nothing re-recorded


def test_compare_with_a_reranker_adds_the_reranked_cells(loop):
    from flows.compare import compare_flow
    from tasks.core.workspace import Workspace
    from tasks.evaluate.config import CompareConfig
    from tasks.train.config import RerankerSettings, SFTDataConfig
    from tasks.train.rerank_train import train_workspace_reranker

    home, out = loop
    data = SFTDataConfig.model_validate({**TINY_TRAIN["data"]})
    rr = train_workspace_reranker(Workspace(home), data, RerankerSettings(epochs=0.3, batch_size=8, max_length=128,
                                                                        candidates=10))
    cfg = CompareConfig.model_validate({**TINY_COMPARE, "rerank": {"model": rr["path"], "candidates": 10}})
    cmp = compare_flow(cfg, home=str(home))
    assert set(cmp["cells"]) == {f"{m}/{mode}" for m in ("base", "tuned") for mode in ("closed", "rag", "rerank")}
    assert "rerank" in cmp["effects"] and "reranking adds" in cmp["verdict"]
    for pair in ("tuned/rerank vs base/closed", "tuned/rerank vs tuned/rag", "base/rerank vs base/rag"):
        c = cmp["comparisons"][pair]["token_f1"]
        assert c["ci_low"] <= c["diff"] <= c["ci_high"]
    assert set(cmp["retrieval"]) == {"rag", "rerank"} and cmp["compare_id"] != out["comparison"]["compare_id"]
    import json

    examples = [json.loads(x) for x in (Path(cmp["path"]) / "examples.jsonl").read_text(encoding="utf-8").splitlines()]
    # 10 candidates reranked to 10: the same documents as plain retrieval, in the reranker's order
    assert all(set(ex["retrieved_rerank"]) == set(ex["retrieved_rag"]) for ex in examples)
    assert any(ex["retrieved_rerank"] != ex["retrieved_rag"] or ex["context_rerank"] != ex["context_rag"]
               for ex in examples)


def test_learning_rate_zero_candidate_is_never_promoted(loop, base_model_dir):
    from flows.promote import promote_flow
    from flows.train import train_flow
    from tasks.core.workspace import Workspace
    from tasks.evaluate.config import EvalConfig
    from tasks.train import registry
    from tasks.train.config import TrainConfig

    home, out = loop
    before = registry.aliases(Workspace(home))["champion"]
    tr = train_flow(TrainConfig.model_validate({**TINY_TRAIN, "base_model": base_model_dir, "learning_rate": 0.0,
                                                "run_id": "lr0"}), home=str(home))
    assert tr["trained"]
    res = promote_flow(EvalConfig.model_validate({**TINY_EVAL, "candidate": "lr0"}), home=str(home))
    assert res["promoted"] is False and res["champion"] == before
    assert any(r["rule"] == "primary_margin" and not r["passed"] for r in res["decision"]["rules"])
    f1 = res["decision"]["rules"][0]
    assert f1["value"] <= 0.02  # an unchanged adapter cannot beat what it is compared with by the margin
    state = registry.aliases(Workspace(home))
    assert state["champion"] == before and registry.resolve(Workspace(home), "challenger") is None
    assert registry.history(Workspace(home))[-1]["action"] == "reject"


def test_answer_cache_hits_and_invalidates_on_model_and_index_changes(loop, tmp_path):
    from tasks.core.workspace import Workspace
    from tasks.serve.ask import ask
    from tasks.serve.config import AskConfig
    from tasks.train import registry

    home, _ = loop
    copy = tmp_path / "ws"
    shutil.copytree(home, copy, ignore=shutil.ignore_patterns("*.lock"))
    ws = Workspace(copy)
    cfg = AskConfig(max_new_tokens=12)
    q = "How many days of paid annual leave do employees get?"
    first = ask(ws, q, cfg)
    assert not first["cached"] and first["sources"] and first["sources"][0]["source_uri"].startswith("file://")
    t = time.perf_counter()
    second = ask(ws, "how many days of paid annual leave do employees get", cfg)  # same question, other spelling
    assert second["cached"] and second["answer"] == first["answer"] and time.perf_counter() - t < 2.0
    other = next(r["version"] for r in registry.versions(ws) if r["version"] != first["model"])
    registry.promote(ws, other, "test: another champion")
    third = ask(ws, q, cfg)
    assert not third["cached"] and third["model"] == other
    from tasks.index.build import update_index
    from tasks.index.qdrant import open_client

    _touch_dataset(ws)
    client = open_client(ws)
    try:
        from tasks.index.config import IndexConfig

        assert update_index(ws, IndexConfig(), client).mode == "incremental"
    finally:
        client.close()
    fourth = ask(ws, q, cfg)
    assert not fourth["cached"] and fourth["index_version"] != third["index_version"]
    assert ask(ws, q, cfg)["cached"]


def _touch_dataset(ws) -> None:
    """Publish a new dataset version with one document edited (what an ingest of a changed file does)."""
    import hashlib

    from tasks.core.records import read_records, sha256_text, write_records
    from tasks.core.workspace import write_pointer
    from tasks.ingest.publish import latest_version

    base = ws.dataset_dir("docs")
    records = read_records(base / latest_version(ws) / "records.parquet")
    records[0] = {**records[0], "text": records[0]["text"] + "\n\nThis page was revised."}
    records[0]["content_hash"] = sha256_text(records[0]["text"])
    version = hashlib.sha256("".join(r["content_hash"] for r in records).encode()).hexdigest()[:16]
    write_records(base / version / "records.parquet", records)
    write_pointer(base / "latest", version)


def test_batched_generation_and_likelihood_match_one_at_a_time(base_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from tasks.train.generate import answer_nll, generate, load_systems, prompt_ids

    model, tok = load_systems(base_model_dir, {}, device="cpu", precision="fp32")
    prompts = [[{"role": "user", "content": q}] for q in
               ("What is the capital of France?", "Name a colour.", "Write one word about the sea, please, now.")]
    batched = generate(model, tok, prompts, max_new_tokens=8, batch_size=3)
    single = [generate(model, tok, [p], max_new_tokens=8, batch_size=1)[0] for p in prompts]
    assert batched == single and all(batched)
    answers = ["Paris.", "Blue.", "Waves."]
    nll = answer_nll(model, tok, prompts, answers, batch_size=3)
    ref = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    for p, a, (total, n) in zip(prompts, answers, nll, strict=True):
        head = prompt_ids(tok, p)
        full = tok.apply_chat_template([*p, {"role": "assistant", "content": a}], tokenize=True)
        full = list(full["input_ids"] if hasattr(full, "keys") else full)
        labels = torch.tensor([[-100] * len(head) + full[len(head):]])
        with torch.no_grad():
            loss = ref(input_ids=torch.tensor([full]), labels=labels).loss  # mean NLL over the answer tokens
        assert n == len(full) - len(head) and total / n == pytest.approx(float(loss), rel=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_likelihood_projects_only_answer_tokens_and_equals_the_full_projection(base_model_dir, monkeypatch,
                                                                               precision):
    from tasks.train import generate as g

    model, tok = g.load_systems(base_model_dir, {}, device="cpu", precision=precision)
    prompts = [[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": q}] for q in
               ("What is the capital of France?", "Name a colour.", "How many legs does a spider have, usually?",
                "Which planet is known as the red one?")]
    answers = ["Paris.", "Blue, or perhaps green.", "Eight.", "Mars is the red planet."]
    projected = []
    hook = model.lm_head.register_forward_hook(lambda mod, args, out: projected.append(args[0].shape[:-1].numel()))
    sliced = g.answer_nll(model, tok, prompts, answers, batch_size=3)
    hook.remove()
    assert g.answer_nll(model, tok, prompts, answers, batch_size=3, prefill_tokens=1) == sliced  # a row per pass
    monkeypatch.setattr(g, "accepts_logits_to_keep", lambda m: False)
    full = g.answer_nll(model, tok, prompts, answers, batch_size=3)
    assert sliced == full  # the same floats, not close ones: evaluation results must not move
    assert sum(projected) == sum(n for _, n in sliced)
