"""bench/gpu_check.py and bench/gpu/ on CPU: arguments, step selection, the budget, the table, the child-output
parsers, the worker entry, the model search, the one-line refusal without CUDA, and (slow) the generation measurement
on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_check as g
from bench.gpu import budget, children, models, report, steps, worker

ROOT = Path(__file__).resolve().parents[2]


# --- arguments and step selection -----------------------------------------------------------------

def test_defaults():
    a = g.parse_args([])
    assert a.out == Path("gpu-check.json") and a.markdown == Path("gpu-check.md")
    assert a.budget_s == 450 and a.steps == list(g.STEPS) and a.max_steps == 20 and a.batch_size == 8
    assert a.gradient_checkpointing == "auto" and a.model_dir == [] and a.work_dir is None
    assert a.tokens_per_step is None and a.micro_batch_tokens is None
    assert a.lever_tokens_per_step == 16384 and a.lever_micro_batch_tokens is None


def test_markdown_follows_out_unless_given(tmp_path):
    assert g.parse_args(["--out", str(tmp_path / "r.json")]).markdown == tmp_path / "r.md"
    a = g.parse_args(["--out", "a.json", "--markdown", "b.md", "--gradient-checkpointing", "off", "--budget-s", "90.5",
                      "--tokens-per-step", "16384", "--micro-batch-tokens", "8192"])
    assert a.markdown == Path("b.md") and a.gradient_checkpointing == "off" and a.budget_s == 90.5
    assert (a.tokens_per_step, a.micro_batch_tokens) == (16384, 8192)


def test_steps_subset_runs_in_the_fixed_order_with_what_it_needs():
    a = g.parse_args(["--steps", "pytest_gpu, train_default_qlora"])
    assert g.select_steps(a.steps) == (["train_default_qlora", "pytest_gpu"], [])
    chosen, notes = g.select_steps(["train_largest_lora", "train_default_lora"])
    assert chosen == ["models", "train_default_lora", "train_largest_lora"]
    assert notes == ["added models (needed by train_largest_lora)"]
    assert g.select_steps(["train_largest_lora_tokens"])[0] == ["models", "train_largest_lora_tokens"]


@pytest.mark.parametrize("argv, message", [
    (["--steps", "train_default_qlora,nope"], "unknown step 'nope' (known: models, train_default_qlora"),
    (["--steps", ","], "empty step list"),
    (["--budget-s", "-5"], "must be a positive number of seconds"),
    (["--budget-s", "0"], "must be a positive number of seconds"),
    (["--budget-s", "inf"], "must be a positive number of seconds"),
    (["--budget-s", "soon"], "not a number"),
    (["--max-steps", "1"], "must be >= 2"),
    (["--batch-size", "0"], "must be >= 1"),
    (["--out", "x.json", "--markdown", "x.json"], "must be different files"),
    (["--micro-batch-tokens", "512"], "needs --tokens-per-step"),
    (["--tokens-per-step", "512", "--micro-batch-tokens", "1024"], "cannot exceed it"),
    (["--gradient-checkpointing", "maybe"], "invalid choice"),
    (["--lever-tokens-per-step", "1024", "--lever-micro-batch-tokens", "2048"], "cannot exceed"),
])
def test_bad_arguments_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        g.parse_args(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


# --- the budget --------------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_step_that_does_not_fit_is_skipped_with_its_reason_and_a_failure_does_not_stop_the_run():
    clock = Clock()
    b = budget.Budget(100, clock=clock, reserve_s=5)
    ran = []

    def work(name, seconds, result=None, boom=False):
        def run(timeout):
            ran.append((name, timeout))
            clock.t += seconds
            if boom:
                raise RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB")
            return result or {"tokens_per_s": 1.0}
        return run

    plan = [budget.Step("a", lambda: 20, work("a", 60)),
            budget.Step("big", lambda: 50, work("big", 1)),  # 40 s left, 35 after the reserve
            budget.Step("fails", lambda: 10, work("fails", 5, boom=True)),
            budget.Step("own-skip", lambda: 0, work("own-skip", 0, {"status": "skipped", "reason": "same model"})),
            budget.Step("last", lambda: 10, work("last", 2))]
    records = []
    budget.run_steps(plan, b, lambda n, r: records.append((n, r)))
    assert [n for n, _ in records] == ["a", "big", "fails", "own-skip", "last"]
    r = dict(records)
    assert r["a"] == {"status": "ok", "tokens_per_s": 1.0, "estimate_s": 20, "seconds": 60.0}
    assert r["big"]["status"] == "skipped" and r["big"]["reason"] == "needs about 50 s; 40 s of the 100 s budget left"
    assert r["fails"]["status"] == "error" and r["fails"]["error"] == "RuntimeError: Tried to allocate 2.00 GiB"
    assert r["own-skip"]["status"] == "skipped" and r["own-skip"]["reason"] == "same model"
    assert r["last"]["status"] == "ok"
    assert "big" not in dict(ran) and dict(ran)["a"] == 80  # the first step's limit: 3 x 20 s, then budget-capped


def test_time_limit_of_a_step():
    clock = Clock()
    b = budget.Budget(450, clock=clock, reserve_s=5)
    assert b.timeout_for(10) == 70  # at least a minute more than the estimate
    assert b.timeout_for(100) == 300  # three times the estimate
    assert b.timeout_for(200) == 445  # never past the budget (less the reserve)
    assert b.timeout_for(446) is None
    clock.t += 500
    assert b.timeout_for(0) is None and b.remaining() == -50


def test_an_estimate_that_fails_is_recorded_as_an_error():
    records = []
    budget.run_steps([budget.Step("x", lambda: 1 / 0, lambda t: {})], budget.Budget(10),
                     lambda n, r: records.append((n, r)))
    assert records == [("x", {"status": "error", "error": "ZeroDivisionError: division by zero"})]


# --- the markdown table ------------------------------------------------------------------------------

def hand_built_result() -> dict:
    train = {"status": "ok", "model": "SmolLM2-135M-Instruct (default)", "tokens_per_s": 12345.6, "ratio": 0.97,
             "peak_gpu_memory_gib": 3.214, "batch_size": 8, "steps": 20, "tokens_per_step": 661.5,
             "gradient_checkpointing": True, "seconds": 40.1}
    return {
        "started_at": "2026-12-01T10:00:00+00:00", "finished_at": "2026-12-01T10:07:00+00:00", "complete": True,
        "budget_s": 450.0, "elapsed_s": 421.3,
        "environment": {"device_name": "NVIDIA H200", "torch": "2.13.0", "cuda": "13.0", "bitsandbytes": "0.50.2",
                        "transformers": "5.24.0"},
        "steps": {
            "models": {"status": "ok", "largest": "SmolLM2-135M-Instruct.Q4_1 (134.5M)", "why": "largest of 1",
                       "candidates_found": 2, "loadable": 1},
            "train_default_qlora": train,
            "train_default_lora": {**train, "tokens_per_s": 20000.0, "ratio": None, "peak_gpu_memory_gib": 1.5},
            "train_default_qlora_tokens": {**train, "tokens_per_s": 123456.0, "ratio": None, "tokens_per_step": 15800.0,
                                           "tokens_per_step_setting": 16384, "accumulation_steps": 1,
                                           "gradient_checkpointing": False, "activation_estimate_gib": 2.04},
            "generate_default": {"status": "ok", "cases": [
                {"system": "base", "batch_size": 16, "prompts": 128, "max_new_tokens": 48, "tokens_per_s": 2500.0,
                 "peak_gpu_memory_gib": 0.4, "empty_answers": 0},
                {"system": "adapter", "batch_size": 16, "prompts": 128, "max_new_tokens": 48, "tokens_per_s": 1200.0,
                 "peak_gpu_memory_gib": 0.45, "empty_answers": 2}]},
            "pytest_gpu": {"status": "ok", "rc": 5, "passed": 0, "failed": 0, "deselected": 402,
                           "note": "no test carries this selection"},
            "train_largest_qlora": {"status": "skipped", "reason": "needs about 500 s; 30 s of the 450 s budget left"},
            "train_largest_lora": {"status": "error", "error": "StepError: exited 1: torch.OutOfMemoryError: a|b"},
            "pytest_train": {"status": "ok", "rc": 1, "passed": 2, "failed": 1,
                             "failed_tests": ["tests/flows/test_train.py::test_training"]},
        }}


def test_markdown_table_from_a_hand_built_result():
    md = report.render_markdown(hand_built_result())
    lines = md.strip().splitlines()
    assert lines[0].startswith("GPU check on NVIDIA H200 (torch 2.13.0, CUDA 13.0, bitsandbytes 0.50.2")
    assert "421 s of a 450 s budget." in lines[0]
    table = [ln for ln in lines if ln.startswith("|")]
    assert table[0] == "| Step | Model | Setting | Tokens/s | Peak GPU memory | Result |"
    assert sum(ln.startswith("| ---") for ln in lines) == 1 and lines[1] == ""  # one table, after the caption
    assert all(ln.count(" | ") == 5 for ln in table)  # six cells in every row (pipes in text are escaped)
    rows = {ln.split(" | ")[0].removeprefix("| ") + "/" + ln.split(" | ")[1]: ln for ln in table[2:]}
    qlora = rows["Training, QLoRA (NF4, double quant, bf16 compute)/SmolLM2-135M-Instruct (default)"]
    assert "| 12,346 | 3.21 GiB | ok; hand PEFT loop ratio 0.97 |" in qlora
    assert "batch 8, 20 steps, ~662 tokens/step, grad. ckpt on" in qlora
    assert "| 20,000 | 1.50 GiB | ok |" in rows["Training, bf16 LoRA/SmolLM2-135M-Instruct (default)"]
    assert "| 2,500 | 0.40 GiB | ok |" in rows["Generation, greedy, base model/SmolLM2-135M-Instruct (default)"]
    assert "ok; 2 empty answers" in md
    assert "skipped: needs about 500 s; 30 s of the 450 s budget left" in md
    assert "error: StepError: exited 1: torch.OutOfMemoryError: a\\|b" in md
    assert "| Tests: `pytest -m gpu` | – | – | – | – | no test carries this selection (402 deselected) |" in md
    assert "| Training, bf16 LoRA | largest offline causal LM | – | – | – | error: StepError" in md
    assert "2 passed, 1 failed; failed: tests/flows/test_train.py::test_training" in md
    assert "ok: largest of 1" in md and "2 candidate(s), 1 loadable" in md
    lever = rows["Training, QLoRA, steps sized in tokens/SmolLM2-135M-Instruct (default)"]
    assert "steps of 16384 tokens (1 micro-batches), 20 steps, ~15800 tokens/step, grad. ckpt off" in lever
    assert "(activations est. 2.0 GiB)" in lever and "10.0x the tokens/s of the same case at batch 8" in lever
    assert "the same case" not in qlora
    assert len(table) == 2 + 10  # header, rule, one row per step and two for generation


def test_incomplete_results_say_so():
    r = {**hand_built_result(), "complete": False, "finished_at": None}
    assert "budget, incomplete." in report.render_markdown(r).splitlines()[0]


# --- child output -----------------------------------------------------------------------------------

def test_last_json_line_skips_python_dicts_and_logs():
    out = "{'train_runtime': '16.7'}\n{\"device\": \"cuda\", \"x\": 1}\nsome log\n{not json\n"
    assert children.last_json_line(out) == {"device": "cuda", "x": 1}
    assert children.last_json_line("[1, 2]\nnothing") is None


def test_error_line_and_child_failures():
    tb = "Traceback (most recent call last):\n  File \"x\", line 1\ntorch.OutOfMemoryError: CUDA out of memory.\n\n"
    assert children.error_line(tb) == "torch.OutOfMemoryError: CUDA out of memory."
    assert children.error_line("warning\nlast words\n") == "last words" and children.error_line("") == "no output"
    with pytest.raises(children.StepError, match="timed out after 30 s"):
        children.child_json(children.ChildResult(None, "", "", 30.0, True), "x", 30)
    with pytest.raises(children.StepError, match="x exited 1: ValueError: bad"):
        children.child_json(children.ChildResult(1, '{"a": 1}', "ValueError: bad", 1.0, False), "x", 30)
    assert children.child_json(children.ChildResult(0, '{"a": 1}', "", 1.0, False), "x", 30) == {"a": 1}


def test_run_child_kills_the_whole_group_at_the_time_limit(tmp_path):
    marker = tmp_path / "grandchild-survived"
    late = tmp_path / "late.py"
    late.write_text(f"import pathlib, time\ntime.sleep(3)\npathlib.Path({str(marker)!r}).touch()\n")
    code = f"import subprocess, sys, time; subprocess.Popen([sys.executable, {str(late)!r}]); time.sleep(30)"
    res = children.run_child([sys.executable, "-c", code], 1.0, dict(os.environ))
    assert res.timed_out and res.rc is None and res.seconds < 10
    import time

    time.sleep(3.5)
    assert not marker.exists()


def test_pytest_closing_lines():
    c = children.parse_pytest_counts("..F\nFAILED tests/flows/test_train.py::test_a - AssertionError: x\n"
                              "2 passed, 1 failed, 3 deselected, 2 warnings in 62.51s (0:01:02)\n")
    assert (c["passed"], c["failed"], c["deselected"], c["errors"]) == (2, 1, 3, 0)
    assert c["failed_tests"] == ["tests/flows/test_train.py::test_a"]
    c = children.parse_pytest_counts("\n412 deselected in 9.80s\n")
    assert c["deselected"] == 412 and c["passed"] == 0
    assert children.parse_pytest_counts("1 passed, 1 error in 1.0s")["errors"] == 1


def test_children_see_one_gpu_and_run_offline():
    env = children.child_env({"CUDA_VISIBLE_DEVICES": "3,5", "PATH": "/bin"}, 2)
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and env["HF_HUB_OFFLINE"] == "1" and env["PATH"] == "/bin"
    assert children.child_env({}, 4)["CUDA_VISIBLE_DEVICES"] == "0"
    assert "CUDA_VISIBLE_DEVICES" not in children.child_env({}, 1)
    assert children.child_env({}, 1)["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)


def test_the_worker_runs_as_the_steps_start_it(tmp_path):
    out = tmp_path / "converted"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"")  # converted already: the job only answers with the folder
    ctx = steps.Context(g.parse_args([]), tmp_path, children.child_env(dict(os.environ), 1), 0.0)
    spec = {"job": "convert", "folder": str(tmp_path / "none"), "gguf_file": "none.gguf", "out": str(out)}
    assert steps.run_worker(ctx, spec, 120, "GGUF conversion") == {"path": str(out)}


def test_every_step_has_a_runner_a_title_and_an_estimate():
    ctx = steps.Context(g.parse_args([]), Path("unused"), {}, 0.0)
    built = steps.build_steps(ctx, list(g.STEPS))
    assert [s.name for s in built] == list(g.STEPS) and set(report.TITLES) == set(g.STEPS)
    assert all(s.estimate() >= 0 for s in built)  # the largest-model cases cost nothing before the model search


def test_generation_settings_are_evaluations_defaults():
    from tasks.evaluate.config import EvalConfig

    assert (EvalConfig().batch_size, EvalConfig().max_new_tokens) == (steps.GEN_BATCH_SIZE, steps.GEN_MAX_NEW_TOKENS)


def test_sample_prompts_are_closed_book_chat_prompts():
    prompts = worker.sample_prompts(3)
    assert len(prompts) == 3 and all(p[-1]["role"] == "user" and p[0]["role"] == "system" for p in prompts)


# --- the model search ----------------------------------------------------------------------------------

def write_model(folder: Path, config: dict, shapes: dict[str, tuple[int, ...]]) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: np.zeros(s, dtype=np.float32) for k, s in shapes.items()}, str(folder / "model.safetensors"))
    return folder


def test_model_search_counts_parameters_and_picks_the_largest_causal_lm(tmp_path):
    llama = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8, "intermediate_size": 16,
             "num_attention_heads": 2, "num_hidden_layers": 1, "num_key_value_heads": 2, "vocab_size": 32}
    write_model(tmp_path / "pkg_a" / "tiny", llama, {"a": (4, 8), "b": (3,)})
    write_model(tmp_path / "pkg_b" / "bigger", llama, {"a": (40, 8)})
    write_model(tmp_path / "pkg_c" / "encoder", {"architectures": ["BertModel"], "model_type": "bert"}, {"a": (999, 9)})
    gptq = {**llama, "quantization_config": {"quant_method": "gptq"}}
    write_model(tmp_path / "pkg_d" / "gptq", gptq, {"a": (999, 9)})
    (tmp_path / "pkg_e" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg_e" / "__pycache__" / "x.gguf").write_text("")
    (tmp_path / "pkg_e" / "weights.gguf").write_text("not a gguf")

    found = models.find_model_files(tmp_path)
    assert sorted((k, p.name, f) for k, p, f in found) == [
        ("gguf", "pkg_e", "weights.gguf"), ("safetensors", "bigger", None), ("safetensors", "encoder", None),
        ("safetensors", "gptq", None), ("safetensors", "tiny", None)]
    assert models.safetensors_parameters(tmp_path / "pkg_a" / "tiny") == 35
    cands = {c["name"]: c for c in (models.describe_model(k, p, f, "test") for k, p, f in found)}
    assert cands["pkg_b/bigger"]["loadable"] and cands["pkg_b/bigger"]["parameters"] == 320
    assert cands["pkg_b/bigger"]["architecture"] == "LlamaForCausalLM"
    assert not cands["pkg_c/encoder"]["loadable"] and "not a causal LM" in cands["pkg_c/encoder"]["reason"]
    assert not cands["pkg_d/gptq"]["loadable"] and "pre-quantised" in cands["pkg_d/gptq"]["reason"]
    assert not cands["pkg_e/weights.gguf"]["loadable"] and cands["pkg_e/weights.gguf"]["reason"]
    best, why = models.pick_largest(list(cands.values()))
    assert best["name"] == "pkg_b/bigger" and "largest of 2 loadable" in why
    assert models.model_label(best) == "pkg_b/bigger (0.0M)"


def test_the_default_model_wins_a_tie_and_nothing_loadable_is_said():
    a = {"name": "a", "loadable": True, "parameters": 10, "is_default": False}
    d = {"name": "d", "loadable": True, "parameters": 10, "is_default": True}
    assert models.pick_largest([a, d])[0] is d and models.pick_largest([d, a])[0] is d
    assert models.pick_largest([{**a, "loadable": False}]) == (None, "no candidate loads offline as a causal LM")


# --- the run -------------------------------------------------------------------------------------------

def test_without_cuda_one_line_exit_2_and_no_files(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(out / "r.json")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [g.NO_CUDA] and proc.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_main_records_every_step_in_order_and_writes_both_files(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(g, "environment", lambda t: {"device_name": "Fake GPU", "total_memory_gib": 80.0,
                                                     "bf16_native": True})
    writes = []
    real_write = g.atomic_write
    monkeypatch.setattr(g, "atomic_write", lambda p, text: (writes.append(p.name), real_write(p, text)))

    def fake_steps(ctx, names):
        assert ctx.work == tmp_path / "work" and ctx.gpu_memory_gib == 80.0
        return [budget.Step(n, lambda: 1, lambda t, n=n: {"status": "error", "error": "boom"} if n == "pytest_gpu"
                            else {"tokens_per_s": 5.0, "model": "m", "batch_size": 1, "steps": 2}) for n in names]

    monkeypatch.setattr(g, "build_steps", fake_steps)
    out = tmp_path / "res" / "r.json"
    code = g.main(["--out", str(out), "--steps", "pytest_gpu,train_default_lora", "--work-dir", str(tmp_path / "work")])
    assert code == 0
    result = json.loads(out.read_text())
    assert list(result["steps"]) == list(g.STEPS) and result["complete"]
    assert result["steps"]["train_default_lora"]["status"] == "ok"
    assert result["steps"]["pytest_gpu"] == {"status": "error", "error": "boom", "estimate_s": 1,
                                             "seconds": result["steps"]["pytest_gpu"]["seconds"]}
    assert result["steps"]["models"] == {"status": "skipped", "reason": "not selected (--steps)"}
    assert result["args"]["steps"] == ["pytest_gpu", "train_default_lora"]  # the fixed order, not the given one
    md = (tmp_path / "res" / "r.md").read_text()
    assert md in capsys.readouterr().out and "Fake GPU" in md
    assert writes.count("r.json") == 4  # before the first step, after each of the two, at the end
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.json", "r.md"]  # no temporary files left


@pytest.mark.slow
def test_generation_measurement_runs_evaluations_code_on_the_cpu(tmp_path, base_model_dir):
    adapter = worker.make_untrained_adapter(base_model_dir, tmp_path / "adapter")
    res = worker.measure_generation(base_model_dir, "cpu", worker.sample_prompts(2),
                                    [("base", 2), ("adapter", 1), ("base", 2, "static")], 3, str(adapter))
    assert [(r["system"], r["batch_size"], r["cache"]) for r in res] == [("base", 2, "dynamic"),
                                                                        ("adapter", 1, "dynamic"), ("base", 2, "static")]
    assert all(r["tokens_per_s"] > 0 and r["answer_tokens"] > 0 and r["peak_gpu_memory_gib"] is None for r in res)
    assert res[0]["sample_answer"] == res[1]["sample_answer"]  # an adapter as initialised (B = 0) changes nothing
    assert res[0]["same_answers_as_dynamic"] is None and 0 <= res[2]["same_answers_as_dynamic"] <= 1


def test_training_cases_pass_the_sizing_and_the_lever_steps_their_own(monkeypatch, tmp_path):
    seen = []

    def fake_child(cmd, timeout_s, env):
        seen.append(cmd)
        out = {"device": "cuda", "quantized": True, "ragtune_tokens_per_s": 1000.0, "tokens_per_step_setting": None}
        return children.ChildResult(0, json.dumps(out) + "\n", "", 1.0, False)

    monkeypatch.setattr(steps, "run_child", fake_child)
    args = g.parse_args(["--workload", "rag", "--sft-dataset", "data/sft", "--lever-tokens-per-step", "8192",
                         "--lever-micro-batch-tokens", "4096"])
    ctx = steps.Context(args, tmp_path, {}, 80.0)
    steps.train_case(ctx, "base", "label", "4bit", 60, True)
    steps.train_case(ctx, "base", "label", "4bit", 60, False, lever=True)
    plain, lever = (" ".join(c) for c in seen)
    for cmd in (plain, lever):
        assert "--gradient-checkpointing auto" in cmd and "--workload rag" in cmd and "--sft-dataset data/sft" in cmd
    assert "--tokens-per-step" not in plain and "--skip-hand-loop" not in plain
    assert "--tokens-per-step 8192" in lever and "--micro-batch-tokens 4096" in lever and "--skip-hand-loop" in lever
