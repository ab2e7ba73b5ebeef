"""`ragtune evaluate | promote | compare | rollback | ask | models`: the model half of the command line (lazy imports)."""

from __future__ import annotations

import argparse
from typing import Any


def _eval_config(args: argparse.Namespace):
    from tasks.config import EvalConfig, load_yaml_config

    data = load_yaml_config(getattr(args, "config", None))
    data = data.get("evaluate", data) if isinstance(data.get("evaluate"), dict) else data
    cfg = EvalConfig.model_validate(data).model_dump()
    for key in ("candidate", "max_examples", "max_new_tokens"):
        if getattr(args, key, None) is not None:
            cfg[key] = getattr(args, key)
    if getattr(args, "judge", False):
        cfg["judge"]["enabled"] = True
    if getattr(args, "judge_model", None):
        cfg["judge"].update(enabled=True, model=args.judge_model)
    return EvalConfig.model_validate(cfg)


def _fmt(v: Any, p: str = "{:.3f}") -> str:
    return "—" if v is None else p.format(v)


def print_evaluation(res: dict[str, Any]) -> None:
    d = res["decision"]
    print(f"evaluation {res['eval_id']}{' (reused)' if res['reused'] else ''}: candidate {res['candidate_version']} "
          f"(run {res['candidate']}) vs {res['reference']}{' ' + res['champion'] if res.get('champion') else ''}, "
          f"{res['examples']} questions")
    systems = list(res["metrics"])
    print(f"  {'':<14}" + "".join(f"{s:>12}" for s in systems))
    for m, p in (("token_f1", "{:.3f}"), ("exact_match", "{:.3f}"), ("rouge_l", "{:.3f}"), ("meteor", "{:.3f}"),
                 ("bertscore", "{:.3f}"), ("bleu", "{:.1f}"), ("perplexity", "{:.2f}"), ("unsafe", "{:.0f}")):
        if any(m in res["metrics"][s] for s in systems):
            print(f"  {m:<14}" + "".join(f"{_fmt(res['metrics'][s].get(m), p):>12}" for s in systems))
    for s, f in (res.get("failures") or {}).items():
        if f["wrong"]:
            print(f"  {s} wrong {f['wrong']}/{f['answers']}: " + ", ".join(
                f"{k.replace('_', ' ')} {v:.0%}" for k, v in f["shares"].items() if v))
    for ref, comp in res["comparisons"].items():
        c = comp.get(d["primary_metric"], {})
        print(f"  {d['primary_metric']} candidate − {ref}: {_fmt(c.get('diff'), '{:+.3f}')} "
              f"[{_fmt(c.get('ci_low'), '{:+.3f}')}, {_fmt(c.get('ci_high'), '{:+.3f}')}]")
    r = res.get("retrieval") or {}
    if r.get("questions"):
        print("  retrieval: " + ", ".join(f"{k} {r[k]:.3f}" for k in r if k.startswith(("recall@", "mrr@", "ndcg@"))))
    print(f"  gate: {'PASS' if d['passed'] else 'FAIL'} — " + "; ".join(d["reasons"]))
    print(f"  report: {res['report']}")


def cmd_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from flows.evaluate import evaluate_flow

    res = evaluate_flow(_eval_config(args))
    if not args.json:
        print_evaluation(res)
    return res


def cmd_promote(args: argparse.Namespace) -> dict[str, Any]:
    from flows.promote import promote_flow

    out = promote_flow(_eval_config(args))
    if not args.json:
        state = "promoted" if out["promoted"] else "not promoted"
        print(f"candidate {out['candidate']} (run {out['run_id']}) {state}; champion: {out['champion'] or 'none'}")
        for r in out["reasons"]:
            print(f"  {r}")
        print(f"  report: {out['report']}")
    return {k: out[k] for k in ("promoted", "champion", "candidate", "reasons", "run_id", "evaluation", "report",
                                "event")}


def _compare_config(args: argparse.Namespace):
    from tasks.config import CompareConfig, load_yaml_config

    data = load_yaml_config(getattr(args, "config", None))
    data = data.get("compare", data) if isinstance(data.get("compare"), dict) else data
    cfg = CompareConfig.model_validate(data).model_dump()
    for key in ("candidate", "max_examples", "max_new_tokens", "metric"):
        if getattr(args, key, None) is not None:
            cfg[key] = getattr(args, key)
    if getattr(args, "rerank", None):
        cfg["rerank"]["model"] = args.rerank
    return CompareConfig.model_validate(cfg)


def print_comparison(res: dict[str, Any]) -> None:
    """The matrix, the cost of fine-tuning, the dominant failure and the verdict."""
    from tasks.compare.attribution import ADVICE, dominant
    from tasks.compare.report import cell_label, cost_line, text_table

    print(f"comparison {res['compare_id']}{' (reused)' if res['reused'] else ''}: base vs {res['tuned']['label']} "
          f"(run {res['tuned']['run_id']}), {res['examples']} {res['split']} questions")
    for line in text_table(res):
        print(line)
    print(f"  {cost_line(res)}")
    best = max(res["cells"], key=lambda k: res["cells"][k]["metrics"].get(res["metric"]) or 0)
    kind = dominant(res["cells"][best]["failures"])
    if kind:
        share = res["cells"][best]["failures"]["shares"][kind]
        print(f"  most wrong answers of the best system ({cell_label(res, best)}) are {kind.replace('_', ' ')} "
              f"({share:.0%}): look at {ADVICE[kind]}")
    print(f"  verdict: {res['verdict']}")
    print(f"  report: {res['report']}")


def cmd_compare(args: argparse.Namespace) -> dict[str, Any]:
    from flows.compare import compare_flow

    res = compare_flow(_compare_config(args))
    if not args.json:
        print_comparison(res)
    return res


def cmd_rollback(args: argparse.Namespace) -> dict[str, Any]:
    from tasks import events, registry
    from tasks.workspace import Workspace

    ws = Workspace.from_env()
    old, new = registry.rollback(ws, reason=args.reason)
    emitted = events.emit("ragtune.model.rolled_back", f"ragtune.model.{new}", {"from": old, "to": new})
    if not args.json:
        print(f"champion rolled back from {old} to {new}")
    return {"from": old, "to": new, "champion": new, "event": "ragtune.model.rolled_back" if emitted else None}


def cmd_models(args: argparse.Namespace) -> dict[str, Any]:
    from tasks import registry
    from tasks.workspace import Workspace

    ws = Workspace.from_env()
    state = registry.aliases(ws)
    rows = [{"version": r["version"], "run_id": r["run_id"], "base_model": r["base_model"],
             "alias": next((a for a in ("champion", "challenger") if state[a] == r["version"]),
                           "archived" if r["version"] in state["archived"] else ""),
             "registered_at": r["registered_at"]} for r in registry.versions(ws)]
    if not args.json:
        if not rows:
            print("no model versions yet (run `ragtune train`, then `ragtune promote`)")
        for r in rows:
            print(f"{r['version']:<5} {r['alias']:<11} {r['run_id']:<32} {r['base_model']}")
    return {"champion": state["champion"], "challenger": state["challenger"], "versions": rows}


def cmd_ask(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.ask import ask
    from tasks.config import AskConfig
    from tasks.workspace import Workspace

    cfg = AskConfig(max_new_tokens=args.max_new_tokens, cache=not args.no_cache,
                    **({"index_name": args.name} if args.name else {}))
    out = ask(Workspace.from_env(), args.question, cfg)
    if not args.json:
        print(out["answer"])
        if out["sources"]:
            print("\nsources:")
            from tasks.search import location

            for s in out["sources"]:
                print(f"  [{s['n']}] {location(s)}  ({s['source_uri']})")
        print(f"\n{out['model']}, index {out['index_version']}{', cached' if out['cached'] else ''}, "
              f"{out['seconds']:.2f} s")
    return out


def cmd_train_reranker(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.config import SFTDataConfig
    from tasks.rerank_train import RerankerSettings, describe, train_workspace_reranker
    from tasks.workspace import Workspace

    given = {k: getattr(args, k) for k in ("base", "epochs", "learning_rate", "negatives", "candidates",
                                           "max_length") if getattr(args, k) is not None}
    data = SFTDataConfig(**{k: v for k, v in (("dataset", args.dataset), ("index_name", args.name)) if v})
    ws = Workspace.from_env()
    out = train_workspace_reranker(ws, data, RerankerSettings(**given), args.min_improvement)
    if not args.json:
        print("\n".join(describe(out)))
    return out


def add_commands(add: Any) -> None:
    """Register the model commands on the main parser (`add(name, fn, help)` returns the subparser)."""
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
    rb = add("rollback", cmd_rollback, "make the previous champion the champion again")
    rb.add_argument("--reason", default="manual rollback", help="recorded in the registry history")
    add("models", cmd_models, "list the registered model versions and their aliases")
    ask = add("ask", cmd_ask, "answer a question with the champion and retrieved context, citing sources")
    ask.add_argument("question", help="the question")
    ask.add_argument("--max-new-tokens", type=int, default=96, metavar="N", help="answer length limit (default 96)")
    ask.add_argument("--no-cache", action="store_true", help="answer again even if the answer is cached")
    ask.add_argument("--name", help="index (alias) name (default docs)")
