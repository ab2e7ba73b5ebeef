"""`ragtune train | evaluate | promote | compare | train-reranker | rollback | models`: the model half of the command
line."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from flows.cli import render
from flows.cli.common import CliError, review_actions, stage_config, workspace
from tasks.core.workspace import read_jsonl
from tasks.evaluate.config import CompareConfig, EvalConfig
from tasks.train.config import QuestionsConfig, SFTDataConfig, TrainConfig


def train_config(args: argparse.Namespace) -> TrainConfig:
    return stage_config(args, "train", TrainConfig, max_steps=args.max_steps, learning_rate=args.learning_rate,
                        run_id=args.run_id, data={"qa_paths": args.qa,
                                                  "rag_context": False if args.no_rag_context else None})


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from flows.train import train_flow  # Prefect and the training stack: imported when the command runs

    res = train_flow(train_config(args))
    out = {k: res[k] for k in ("run_id", "adapter_dir", "steps", "train_loss", "eval_loss", "device", "quantized")}
    out.update(dataset_version=res["dataset_version"], trained=res["trained"])
    if not args.json:
        render.print_train(res)
    return out


def questions_config(args: argparse.Namespace) -> QuestionsConfig:
    return stage_config(args, "questions", QuestionsConfig, index_name=getattr(args, "name", None),
                        generator=getattr(args, "generator", None), generator_model=getattr(args, "generator_model",
                                                                                            None),
                        max_per_document=getattr(args, "max_per_document", None),
                        round_trip_k=getattr(args, "round_trip_k", None), min_pairs=getattr(args, "min_pairs", None))


def cmd_questions_generate(args: argparse.Namespace) -> dict[str, Any]:
    from flows.questions import questions_flow

    out = questions_flow(questions_config(args))
    if not args.json:
        render.print_question_set(out)
    return out


def cmd_questions_list(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.train.questions.build import latest_question_set
    from tasks.train.questions.review import status_of

    cfg = questions_config(args)
    folder = latest_question_set(workspace(), cfg.dataset)
    if folder is None:
        raise CliError("no question set yet: run `ragtune questions generate` first")
    lines = read_jsonl(folder / "manifest.jsonl")
    items = [{**m, "status": status_of(m)} for m in lines]
    picked = [m for m in items if (not args.status or m["status"] == args.status)
              and (not args.kind or m["kind"] == args.kind)]
    out = {"version": folder.name, "total": len(items), "matched": len(picked),
           "counts": dict(Counter(m["status"] for m in items)), "items": picked[: args.limit] if args.limit else picked}
    if not args.json:
        render.print_question_items(out)
    return out


def _review(args: argparse.Namespace, decision: str, ids: list[str], reason: str) -> dict[str, Any]:
    from flows.questions import questions_review_flow

    out = questions_review_flow(questions_config(args), ids, decision, reason, by=args.by)
    if not args.json:
        print(f"{decision} {len(ids)} pair(s); question set {out['version']}: {out['counts']['accepted']} accepted")
    return out


def cmd_questions_accept(args: argparse.Namespace) -> dict[str, Any]:
    return _review(args, "accepted", args.ids, args.note or "")


def cmd_questions_reject(args: argparse.Namespace) -> dict[str, Any]:
    return _review(args, "rejected", args.ids, args.reason)


def eval_config(args: argparse.Namespace) -> EvalConfig:
    judge = bool(getattr(args, "judge", False) or getattr(args, "judge_model", None))
    return stage_config(args, "evaluate", EvalConfig, candidate=args.candidate, max_examples=args.max_examples,
                        max_new_tokens=args.max_new_tokens, test_file=getattr(args, "test_file", None),
                        judge={"enabled": True if judge else None, "model": getattr(args, "judge_model", None)})


def cmd_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from flows.evaluate import evaluate_flow

    res = evaluate_flow(eval_config(args))
    if not args.json:
        render.print_evaluation(res)
    return res


def cmd_promote(args: argparse.Namespace) -> dict[str, Any]:
    from flows.promote import promote_flow

    out = promote_flow(eval_config(args))
    if not args.json:
        render.print_promotion(out)
    return {k: out[k] for k in ("promoted", "champion", "candidate", "reasons", "run_id", "evaluation", "report",
                                "event")}


def compare_config(args: argparse.Namespace) -> CompareConfig:
    return stage_config(args, "compare", CompareConfig, candidate=args.candidate, max_examples=args.max_examples,
                        max_new_tokens=args.max_new_tokens, metric=args.metric, rerank={"model": args.rerank})


def cmd_compare(args: argparse.Namespace) -> dict[str, Any]:
    from flows.compare import compare_flow

    res = compare_flow(compare_config(args))
    if not args.json:
        render.print_comparison(res)
    return res


def cmd_rollback(args: argparse.Namespace) -> dict[str, Any]:
    from flows.promote import ROLLED_BACK, rollback_flow

    out = rollback_flow(args.reason)
    if not args.json:
        print(f"champion rolled back from {out['from']} to {out['to']}")
    return {**out, "champion": out["to"], "event": ROLLED_BACK}


def cmd_models(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.train import registry

    ws = workspace()
    state = registry.aliases(ws)
    rows = [{"version": r["version"], "run_id": r["run_id"], "base_model": r["base_model"],
             "alias": next((a for a in ("champion", "challenger") if state[a] == r["version"]),
                           "archived" if r["version"] in state["archived"] else ""),
             "registered_at": r["registered_at"]} for r in registry.versions(ws)]
    if not args.json:
        render.print_models(rows)
    return {"champion": state["champion"], "challenger": state["challenger"], "versions": rows}


def cmd_train_reranker(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.train.config import RerankerSettings
    from tasks.train.rerank_train import describe, train_workspace_reranker

    given = {k: getattr(args, k) for k in ("base", "epochs", "learning_rate", "negatives", "candidates",
                                           "max_length") if getattr(args, k) is not None}
    data = SFTDataConfig(**{k: v for k, v in (("dataset", args.dataset), ("index_name", args.name)) if v})
    out = train_workspace_reranker(workspace(), data, RerankerSettings(**given), args.min_improvement)
    if not args.json:
        print("\n".join(describe(out)))
    return out


def add_commands(add: Any) -> None:
    """Register the model commands on the main parser (`add(name, fn, help)` returns the subparser)."""
    tr = add("train", cmd_train, "fine-tune a QLoRA adapter on the Q/A set, with context from the served index")
    tr.add_argument("--config", metavar="FILE", help="YAML file with TrainConfig fields (or a `train:` section)")
    tr.add_argument("--max-steps", type=int, metavar="N", help="optimizer steps (default 40)")
    tr.add_argument("--learning-rate", type=float, metavar="LR", help="peak learning rate (default 1e-3)")
    tr.add_argument("--qa", action="append", metavar="PATH",
                    help="human-written Q/A JSONL file (repeatable; default: none, plus the generated question set; "
                    "the bundled sample's own Q/A set on the bundled sample corpus)")
    tr.add_argument("--no-rag-context", action="store_true", help="closed-book: no retrieved passages in prompts")
    tr.add_argument("--run-id", metavar="ID", help="resume this run from its last checkpoint (or return it if done)")
    for name, fn, help_ in (("evaluate", cmd_evaluate, "evaluate a trained adapter against the champion and the base "
                             "model and print the gate's decision"),
                            ("promote", cmd_promote, "evaluate and gate the candidate; make it the champion only if "
                             "every rule passes")):
        sp = add(name, fn, help_)
        sp.add_argument("--config", metavar="FILE", help="YAML file with EvalConfig fields (or an `evaluate:` section)")
        sp.add_argument("--candidate", metavar="RUN_ID", help="training run to evaluate (default: the challenger, "
                        "else the newest finished run)")
        sp.add_argument("--max-examples", type=int, metavar="N", help="evaluate only the first N test questions")
        sp.add_argument("--max-new-tokens", type=int, metavar="N", help="generation length limit (default 48)")
        sp.add_argument("--judge", action="store_true", help="also run the pairwise LLM judge (position-swapped)")
        sp.add_argument("--judge-model", metavar="PATH_OR_ID", help="judge model (implies --judge)")
        sp.add_argument("--test-file", metavar="QA_JSONL", help="evaluate on this Q/A file (e.g. a human-written "
                        "set) instead of the SFT dataset's test split")
    cp = add("compare", cmd_compare, "RAG, fine-tuning or both? the base model and a fine-tuned run, closed-book and "
             "with retrieval (and reranking), with intervals, cost and failure attribution")
    cp.add_argument("--config", metavar="FILE", help="YAML file with CompareConfig fields (or a `compare:` section)")
    cp.add_argument("--candidate", metavar="RUN_ID", help="fine-tuned run (default: the champion, else the "
                    "challenger or the newest finished run)")
    cp.add_argument("--max-examples", type=int, metavar="N", help="compare on the first N test questions only")
    cp.add_argument("--max-new-tokens", type=int, metavar="N", help="generation length limit (default 48)")
    cp.add_argument("--metric", choices=["token_f1", "exact_match", "rouge_l", "meteor", "bertscore"],
                    help="metric of the verdict and the chart (default token_f1)")
    cp.add_argument("--rerank", metavar="MODEL", help="also run the retrieval cells with this cross-encoder (a "
                    "folder, a hub id, or `trained`)")
    tr = add("train-reranker", cmd_train_reranker, "fine-tune a cross-encoder reranker on the SFT train "
             "split; it becomes `trained` only if it raises retrieval nDCG@10 on the test split")
    tr.add_argument("--base", metavar="MODEL", help="model to start from (default: the packaged MiniLM)")
    tr.add_argument("--epochs", type=float, metavar="N", help="training epochs (default 2)")
    tr.add_argument("--learning-rate", type=float, metavar="LR", help="peak learning rate (default 2e-4)")
    tr.add_argument("--negatives", type=int, metavar="N", help="hard negatives per question (default 3)")
    tr.add_argument("--candidates", type=int, metavar="N", help="hybrid hits mined and reranked (default 20)")
    tr.add_argument("--max-length", type=int, metavar="N",
                    help="tokens per question-passage pair (default 256)")
    tr.add_argument("--min-improvement", type=float, default=0.0, metavar="D",
                    help="least nDCG@10 gain over hybrid for `trained` to move (default 0; it must be above)")
    tr.add_argument("--dataset", help="SFT dataset name (default sft)")
    tr.add_argument("--name", help="index (alias) name (default docs)")
    q = add("questions", None, "Q/A pairs from your own corpus: generate them from the indexed chunks, review them")
    q.add_argument("--config", metavar="FILE", help="YAML with QuestionsConfig fields (or a `questions:` section)")
    q.add_argument("--name", help="index (alias) name (default docs)")
    action = review_actions(q)
    gen = action("generate", cmd_questions_generate, "generate, check and publish a question set from the served "
                 "index (structural pairs; --generator adds model-written ones)")
    gen.add_argument("--generator", metavar="MODEL", help="also ask a model: a local causal LM folder, "
                     "`packaged:SmolLM2-135M-Instruct`, or `openai:URL` (an OpenAI-compatible endpoint)")
    gen.add_argument("--generator-model", metavar="NAME", help="model name for an OpenAI-compatible endpoint")
    gen.add_argument("--max-per-document", type=int, metavar="N", help="pairs kept per document (default 12)")
    gen.add_argument("--round-trip-k", type=int, metavar="K", help="the retriever must find the document in its "
                     "top K (default 5)")
    gen.add_argument("--min-pairs", type=int, metavar="N", help="fail when fewer pairs are kept (default 10)")
    ls = action("list", cmd_questions_list, "list the latest question set's pairs and their status")
    ls.add_argument("--status", choices=["accepted", "set_aside", "duplicate", "rejected"], help="only this status")
    ls.add_argument("--kind", choices=["faq", "table", "setting", "changelog", "definition", "heading", "model"],
                    help="only this kind of pair")
    ls.add_argument("--limit", type=int, default=50, metavar="N", help="at most N pairs (default 50; 0: all)")
    acc = action("accept", cmd_questions_accept, "accept pairs (e.g. ones set aside by a check)")
    acc.add_argument("ids", nargs="+", metavar="PAIR_ID", help="pair ids (see `ragtune questions list`)")
    acc.add_argument("--note", help="a note kept with the decision")
    acc.add_argument("--by", default="reviewer", help="who decided (kept with the decision)")
    rej = action("reject", cmd_questions_reject, "reject pairs: they leave the next question set")
    rej.add_argument("ids", nargs="+", metavar="PAIR_ID", help="pair ids (see `ragtune questions list`)")
    rej.add_argument("--reason", required=True, help="why (kept with the decision)")
    rej.add_argument("--by", default="reviewer", help="who decided (kept with the decision)")
    rb = add("rollback", cmd_rollback, "make the previous champion the champion again")
    rb.add_argument("--reason", default="manual rollback", help="recorded in the registry history")
    add("models", cmd_models, "list the registered model versions and their aliases")
