"""evaluate: the candidate adapter, the champion and the base model answer the SFT test split with the prompts and
retrieval of serving; answer and retrieval metrics, paired bootstrap intervals, a safety count, an optional
judge, and the gate's decision — written to `evaluations/<id>/` with the per-example outputs."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tasks.core.config import resolve_local_source
from tasks.core.provenance import file_digest, provenance
from tasks.core.workspace import (
    Workspace,
    atomic_write_json,
    atomic_write_text,
    new_run_id,
    publish_dir,
    read_json,
    utc_now,
    write_jsonl,
)
from tasks.evaluate.attribution import attribute_all, shares
from tasks.evaluate.config import EvalConfig
from tasks.evaluate.gate import decide
from tasks.evaluate.generations import SystemRunner
from tasks.evaluate.judge import judge_pairs
from tasks.evaluate.metrics import answer_table, as_jsonable, paired_bootstrap
from tasks.evaluate.report import render_evaluation
from tasks.evaluate.safety import load_blocklist
from tasks.index.retrieval_eval import retrieval_metrics
from tasks.index.served import served_state
from tasks.train import registry
from tasks.train.config import SFTDataConfig
from tasks.train.generate import load_systems
from tasks.train.model import resolve_base_model
from tasks.train.prompt import build_messages, serving_prompts
from tasks.train.sft import drop_duplicates, load_split, read_qa_files

log = logging.getLogger("ragtune.evaluate")
SYSTEMS = ("base", "champion", "candidate")


class EvaluationError(RuntimeError):
    """An evaluation that cannot run (no candidate, no test examples, a missing adapter)."""


@dataclass
class EvalResult:
    eval_id: str
    path: str
    report: str
    candidate: str  # training run id
    candidate_version: str  # registry version
    champion: str | None
    reference: str  # what the gate compared against: champion or base
    metrics: dict[str, dict[str, float]]
    comparisons: dict[str, dict[str, dict[str, float]]]
    retrieval: dict[str, Any]
    decision: dict[str, Any]
    examples: int
    reused: bool
    judge: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)  # per system: tasks.evaluate.attribution


def run_meta(ws: Workspace, run_id: str) -> dict[str, Any]:
    meta = read_json(ws.models / run_id / "meta.json", default=None)
    if not meta or meta.get("status") != "complete":
        raise EvaluationError(f"training run {run_id!r} has not finished in {ws.models} (no complete meta.json)")
    return meta


def resolve_candidate(ws: Workspace, run_id: str | None) -> dict[str, Any]:
    """The given run, else the registry's challenger, else the newest finished training run."""
    if run_id:
        return run_meta(ws, run_id)
    challenger = registry.resolve(ws, "challenger")
    if challenger:
        return run_meta(ws, challenger["run_id"])
    runs = [read_json(p) for p in ws.models.glob("*/meta.json")] if ws.models.is_dir() else []
    done = sorted((m for m in runs if m and m.get("status") == "complete"), key=lambda m: m.get("finished_at", ""))
    if not done:
        raise EvaluationError(f"no finished training run in {ws.models}: run `ragtune train` first")
    return done[-1]


def _served_index_version(ws: Workspace, data: SFTDataConfig) -> str | None:
    if not data.rag_context:
        return None

    collection, state = served_state(ws, data.index_name)
    if collection is None:
        raise EvaluationError(f"the candidate was trained with retrieved context but no index named "
                              f"{data.index_name!r} is served: run `ragtune index` first")
    return state


def evaluation_id(ws: Workspace, cfg: EvalConfig, cand: dict[str, Any], champ: dict[str, Any] | None,
                  index_state: str | None) -> str:
    key = {"candidate": cand["run_id"], "adapter": file_digest(Path(cand["adapter_dir"]) / "adapter_model.safetensors"),
           "champion": champ and [champ["run_id"], file_digest(Path(champ["adapter_dir"]) / "adapter_model.safetensors")],
           "base": cand["base_model"], "dataset": cand["dataset_version"], "index": index_state,
           "config": cfg.model_dump(mode="json")}
    if cfg.test_file:  # the file's content, not just its name, decides the evaluation
        found = resolve_local_source(cfg.test_file)
        key["test_file_digest"] = file_digest(found) if found and found.is_file() else None
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def file_rows(path: str, data: SFTDataConfig) -> list[dict[str, Any]]:
    """Evaluation rows of a Q/A JSONL file (the SFT dataset's row shape; unusable lines are left out)."""
    found = resolve_local_source(path)
    if found is None or not found.is_file():
        raise EvaluationError(f"test file not found: {path}")
    items, _ = read_qa_files([found])
    items, _ = drop_duplicates(items)
    return [{"id": it.id, "question": it.question, "answer": it.answer, "doc_id": it.doc_id,
             "given_messages": it.messages is not None,
             "messages": it.messages or build_messages(it.question, it.answer, None, data.system_prompt)}
            for it in items]


def load_evaluation(path: Path) -> EvalResult:
    data = read_json(path / "metrics.json")
    return EvalResult(**{k: data[k] for k in EvalResult.__dataclass_fields__ if k in data})


def evaluate(ws: Workspace, cfg: EvalConfig) -> EvalResult:
    """Evaluate the candidate (see module doc); an evaluation with the same inputs is reused, not repeated.
    The candidate must be registered (`registry.register`, which the evaluate flow does); nothing here writes the
    registry."""
    cand = resolve_candidate(ws, cfg.candidate)
    cand_rec = registry.record_of_run(ws, cand["run_id"])
    if cand_rec is None:
        raise EvaluationError(f"training run {cand['run_id']} is not registered: evaluate it through the evaluate "
                              "flow (`ragtune evaluate`), which registers it as the challenger")
    champ_rec = registry.resolve(ws, "champion")
    if champ_rec and champ_rec["run_id"] == cand["run_id"]:
        champ_rec = None  # the candidate is the champion already: compare with the base model only
    champ = run_meta(ws, champ_rec["run_id"]) if champ_rec else None
    data = SFTDataConfig.model_validate(cand["config"]["data"])
    eval_id = evaluation_id(ws, cfg, cand, champ, _served_index_version(ws, data))
    final = ws.root / "evaluations" / eval_id
    if (final / "metrics.json").exists():
        res = load_evaluation(final)
        res.reused = True
        if not Path(res.report).exists():
            write_report_files(ws, final)
        return res

    timings: dict[str, float] = {}
    t = time.perf_counter()
    if cfg.test_file:
        rows = file_rows(cfg.test_file, data)[: cfg.max_examples]
        if not rows:
            raise EvaluationError(f"test file {cfg.test_file} holds no usable question/answer lines")
    else:
        dataset_dir = ws.dataset_dir(cand["dataset"]) / cand["dataset_version"]
        rows = load_split(dataset_dir, cfg.split)[: cfg.max_examples]
        if not rows:
            raise EvaluationError(f"SFT dataset {cand['dataset_version']} has no {cfg.split} examples")
    inputs = serving_prompts(ws, rows, data, cfg.retrieval_k)
    prompts, ranked, index_version = inputs["prompts"], inputs["ranked"], inputs["index_version"]
    timings["retrieve"] = time.perf_counter() - t

    blocklist = load_blocklist(cfg.safety_blocklist)
    relevant = {r["id"]: {r["doc_id"]} for r in rows if r.get("doc_id")}
    retrieval = retrieval_metrics({r["id"]: ranked[i] for i, r in enumerate(rows) if ranked[i]}, relevant,
                                  ks=sorted({1, data.context_k, cfg.retrieval_k}))
    adapters = {"candidate": cand["adapter_dir"], **({"champion": champ["adapter_dir"]} if champ else {})}
    base_path = resolve_base_model(ws, cand["base_model"])
    answers, nll = _run_systems(ws, base_path, adapters, prompts, rows, cfg, timings)
    tables = {}
    unsafe = {s: [blocklist.matches(a) for a in answers[s]] for s in answers}
    refs = [[r["answer"]] for r in rows]
    t = time.perf_counter()
    for s in answers:
        tables[s] = answer_table(answers[s], refs, nll[s], [int(bool(u)) for u in unsafe[s]],
                                 bertscore_model=cfg.bertscore_model, bertscore_layer=cfg.bertscore_layer)
    timings["metrics"] = time.perf_counter() - t
    failures = {s: attribute_all(rows, answers[s], tables[s], inputs) for s in answers}
    t = time.perf_counter()
    comparisons = {ref: paired_bootstrap(tables["candidate"], tables[ref], cfg.bootstrap_samples, cfg.seed,
                                         cfg.confidence) for ref in ("base", "champion") if ref in tables}
    timings["bootstrap"] = time.perf_counter() - t
    reference = "champion" if champ else "base"
    judge = _judge(base_path, cfg, rows, answers, reference, timings) if cfg.judge.enabled else None

    decision = decide(comparisons[reference], cfg.gate, reference,
                      {"base_model": cand["base_model"], "tokenizer": cand_rec["tokenizer"]},
                      {"base_model": champ_rec["base_model"], "tokenizer": champ_rec["tokenizer"]} if champ_rec else None)
    result = EvalResult(
        eval_id=eval_id, path=str(final), report=str(report_path(ws, eval_id)), candidate=cand["run_id"],
        candidate_version=cand_rec["version"], champion=champ_rec["version"] if champ_rec else None,
        reference=reference, metrics={s: t.summary() for s, t in tables.items()}, comparisons=comparisons,
        retrieval={**retrieval, "index_version": index_version, "k_in_prompt": data.context_k if data.rag_context else 0},
        failures={s: shares(f) for s, f in failures.items()},
        decision=decision, examples=len(rows), reused=False, judge=judge and {k: v for k, v in judge.items()
                                                                             if k != "verdicts"}, timings=timings)
    _publish(ws, final, result, rows, prompts, ranked, answers, tables, unsafe, judge, cfg, cand, champ, blocklist,
             failures)
    log.info("evaluation %s: candidate %s vs %s: %s", eval_id, cand["run_id"], reference,
             "pass" if decision["passed"] else "fail")
    return result


def _run_systems(ws: Workspace, base_path: str, adapters: dict[str, str], prompts: list[list[dict[str, str]]],
                 rows: list[dict[str, Any]], cfg: EvalConfig, timings: dict[str, float],
                 ) -> tuple[dict[str, list[str]], dict[str, list[tuple[float, int]]]]:
    """Answers and reference-answer likelihoods of the base model and of each adapter: those a system gave to
    the same prompts before come from the workspace (`tasks.evaluate.generations`), the rest from one model
    load, which is dropped before the metrics run."""
    runner = SystemRunner(ws, base_path, adapters, cfg.batch_size, cfg.max_new_tokens, cache=cfg.generation_cache)
    refs = [r["answer"] for r in rows]
    answers, nll = {}, {}
    for system in ("base", *adapters):
        t, load_s = time.perf_counter(), runner.load_s
        out = runner.run(system, prompts, refs)
        answers[system], nll[system] = out.answers, out.nll
        timings[f"generate_{system}"] = time.perf_counter() - t - (runner.load_s - load_s)
    timings["load"] = runner.load_s
    runner.close()
    return answers, nll


def _judge(base_path: str, cfg: EvalConfig, rows: list[dict[str, Any]], answers: dict[str, list[str]],
           reference: str, timings: dict[str, float]) -> dict[str, Any]:
    t = time.perf_counter()
    model, tokenizer = load_systems(cfg.judge.model or base_path, {})
    n = min(cfg.judge.max_examples, len(rows))
    out = judge_pairs(model, tokenizer, [r["question"] for r in rows[:n]], [r["answer"] for r in rows[:n]],
                      answers["candidate"][:n], answers[reference][:n], cfg.batch_size)
    timings["judge"] = time.perf_counter() - t
    return {**out, "model": cfg.judge.model or base_path, "against": reference}


def report_path(ws: Workspace, eval_id: str) -> Path:
    return ws.reports / "evaluations" / f"{eval_id}.html"


def _publish(ws: Workspace, final: Path, result: EvalResult, rows, prompts, ranked, answers, tables, unsafe, judge,
             cfg: EvalConfig, cand: dict[str, Any], champ: dict[str, Any] | None, blocklist, failures) -> None:
    """Per-example outputs (JSONL and parquet), then metrics.json last, into a staging folder renamed into place."""
    import pandas as pd

    staging = final.parent / f".staging-{new_run_id()}"
    systems = list(answers)
    examples = []
    for i, r in enumerate(rows):
        ex = {"id": r["id"], "question": r["question"], "reference": r["answer"], "doc_id": r.get("doc_id"),
              "retrieved_doc_ids": ranked[i][:cfg.retrieval_k], "prompt": prompts[i][-1]["content"]}
        for s in systems:
            ex[f"answer_{s}"] = answers[s][i]
            for m in ("exact_match", "token_f1", "rouge_l", "meteor", "bertscore"):
                if m in tables[s].stats:
                    ex[f"{m}_{s}"] = float(tables[s].stats[m][i, 0])
            ex[f"failure_{s}"] = failures[s][i]
            nll_sum, n_tok = tables[s].stats["perplexity"][i]
            ex[f"nll_{s}"] = float(nll_sum / n_tok) if n_tok else None
            ex[f"unsafe_{s}"] = unsafe[s][i]
        if judge and i < len(judge["verdicts"]):
            ex["judge_verdict"] = judge["verdicts"][i]
        examples.append(ex)
    write_jsonl(staging / "examples.jsonl", examples)
    pd.DataFrame(examples).assign(**{f"unsafe_{s}": [", ".join(e[f"unsafe_{s}"]) for e in examples] for s in systems}
                                  ).to_parquet(staging / "examples.parquet", index=False)
    meta = {**asdict(result), "created_at": utc_now(), "config": cfg.model_dump(mode="json"),
            "candidate_run": {k: cand.get(k) for k in ("run_id", "base_model", "dataset_version", "index_version",
                                                       "metrics", "history", "device", "quantized")},
            "champion_run": champ and {k: champ.get(k) for k in ("run_id", "base_model", "dataset_version")},
            "safety": {"blocklist": blocklist.path, "sha256": blocklist.sha256, "entries": len(blocklist.entries)},
            **provenance()}
    atomic_write_json(staging / "metrics.json", as_jsonable(meta))
    publish_dir(staging, final)
    write_report_files(ws, final)


def write_report_files(ws: Workspace, folder: Path) -> Path:
    """The HTML report of an evaluation folder (re-creatable from its files)."""
    data = read_json(folder / "metrics.json")
    examples = [json.loads(line) for line in (folder / "examples.jsonl").read_text(encoding="utf-8").splitlines()
                if line.strip()]
    path = report_path(ws, data["eval_id"])

    atomic_write_text(path, render_evaluation(data, examples))
    return path


def result_dict(r: EvalResult) -> dict[str, Any]:
    return as_jsonable(asdict(r))
