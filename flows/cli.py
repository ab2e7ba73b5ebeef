"""The `ragtune` command line: thin argument parsing over the flows (heavy imports stay lazy)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

EPILOG = "RAGTUNE_HOME selects the workspace (default ./.ragtune). With --json, one JSON object goes to stdout."


class CliError(Exception):
    """An error whose message is already the one line the user should read."""


def _prepare_env(verbose: bool) -> None:
    """Logging through Prefect: runs log to the API at INFO; the console shows them only with -v."""
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "ragtune")
    # the temporary server can take longer than Prefect's 20 s default to start on a busy machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry calls from the server
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "ERROR")
        # progress bars of datasets / transformers / huggingface_hub (model loading, tokenising)
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")


def _ingest_config(args: argparse.Namespace):
    from tasks.config import IngestConfig, load_yaml_config

    data = load_yaml_config(args.config)
    data = data.get("ingest", data) if isinstance(data.get("ingest"), dict) else data
    cfg = IngestConfig.model_validate(data)
    if args.source:
        cfg.collect.sources = args.source
    if args.max_quarantine_fraction is not None:
        cfg.validation.max_quarantine_fraction = args.max_quarantine_fraction
    if args.near_dedup_threshold is not None:
        cfg.clean.near_dedup_threshold = args.near_dedup_threshold
    if args.no_redact_pii:
        cfg.clean.redact_pii = False
    if args.profile:
        cfg.clean.profile = args.profile
    if args.keep:
        cfg.clean.keep = [*cfg.clean.keep, *args.keep]
    if args.dataset:
        cfg.dataset = args.dataset
    return cfg


def cmd_ingest(args: argparse.Namespace) -> dict[str, Any]:
    cfg = _ingest_config(args)
    from tasks.collect import resolve_sources

    resolve_sources(cfg.collect.sources)  # a typo in a path fails here, before Prefect starts
    from flows.ingest import ingest_flow

    out = _ingest_output(ingest_flow(cfg))
    if not args.json:
        print_ingest(out)
    for w in out["warnings"] if args.json else []:  # stdout holds the one JSON object; a person reads stderr
        print(f"ragtune ingest: {w}", file=sys.stderr)
    return out


def _ingest_output(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "dataset_version": summary["dataset_version"], "counts": summary["counts"],
        "manifest": summary.get("manifest"), "quarantine_dir": summary.get("quarantine_dir"),
        "data_docs": summary.get("data_docs"), "changes": summary.get("changes", {}).get("counts", {}),
        "reused": summary.get("reused", False), "run_id": summary.get("run_id"),
        "dataset_dir": summary.get("dataset_dir"), "top_reasons": summary.get("top_reasons", []),
        "pii_redactions": summary.get("pii_redactions", {}), "profiles": summary.get("profiles", {}),
        "warnings": summary.get("warnings", []),
    }


def print_ingest(out: dict[str, Any]) -> None:
    c = out["counts"]
    print(f"dataset version {out['dataset_version']}{' (unchanged, reused)' if out['reused'] else ''}")
    print(f"  units seen {c['seen']}: accepted {c['accepted']}, duplicate {c['duplicate']}, "
          f"filtered {c['filtered']}, quarantined {c['quarantined']}")
    if out.get("changes"):
        print("  changes: " + ", ".join(f"{k} {v}" for k, v in out["changes"].items()))
    for r in out.get("top_reasons", [])[:8]:
        print(f"  {r['fate']:<11} {r['count']:>4}  {r.get('example') or r['reason']}")
    if out.get("pii_redactions"):
        print("  PII redacted: " + ", ".join(f"{k} {v}" for k, v in out["pii_redactions"].items()))
    print(f"  records:    {out['dataset_dir']}/records.parquet")
    print(f"  manifest:   {out['manifest']}")
    if out.get("data_docs"):
        print(f"  data docs:  {out['data_docs']}")
    if out.get("quarantine_dir"):
        print(f"  quarantine: {out['quarantine_dir']}")
    for w in out.get("warnings", []):  # last, where the eye lands
        print(w)


def _index_config(args: argparse.Namespace):
    """YAML file values, then flags; only what is given counts as set (the workspace's own config.yaml fills
    the rest in the flow)."""
    from tasks.config import IndexConfig, load_yaml_config

    data = load_yaml_config(getattr(args, "config", None))
    data = data.get("index", data) if isinstance(data.get("index"), dict) else data
    updates = {k: v for k, v in {"name": args.name, "chunk_size": getattr(args, "chunk_size", None),
                                 "chunk_overlap": getattr(args, "chunk_overlap", None)}.items() if v is not None}
    return IndexConfig.model_validate({**data, **updates})


def cmd_index(args: argparse.Namespace) -> dict[str, Any]:
    cfg = _index_config(args)
    if args.rollback:
        from tasks.index import rollback_index
        from tasks.qdrant import open_client
        from tasks.workspace import Workspace

        ws = Workspace.from_env()
        client = open_client(ws)
        try:
            with ws.lock("index"):
                old, new = rollback_index(ws, client, cfg.name)
        finally:
            client.close()
        out = {"name": cfg.name, "from": old, "to": new}
        if not args.json:
            print(f"index {cfg.name}: rolled back from {old} to {new}")
        return out
    from flows.index import index_flow

    out = index_flow(cfg, incremental=args.incremental)
    if not args.json:
        from tasks.report import describe_check

        print(f"index {out['name']} -> {out['collection']} ({out['mode']})")
        print(f"  dataset version {out['dataset_version']}: {out['chunks']} chunks, {out['points']} points")
        if out["changes"]:
            ch = out["changes"]
            print(f"  {ch['added']} added, {ch['changed']} changed, {ch['removed']} removed documents; "
                  f"{ch['chunks_embedded']} chunks embedded")
        if out["check"]:
            print(f"  {describe_check(out['check'])}")
        if out["timings"]:
            print("  " + ", ".join(f"{k} {v:.1f}s" for k, v in out["timings"].items() if k != "embed_parts"))
    return out


def cmd_search(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.config import RerankConfig
    from tasks.qdrant import alias_target, open_client
    from tasks.rerank import candidate_depth, rerank
    from tasks.search import search_collection
    from tasks.workspace import Workspace

    if args.candidates is not None and not args.rerank:
        raise CliError("--candidates needs --rerank MODEL")
    given = {"candidates": args.candidates} if args.candidates is not None else {}
    rcfg = RerankConfig(model=args.rerank, **given)

    filters = {}
    for f in args.filter or []:
        key, sep, value = f.partition("=")
        if not sep or not key:
            raise CliError(f"--filter expects key=value, got {f!r}")
        filters[key] = value
    cfg = _index_config(args)
    ws = Workspace.from_env()
    client = open_client(ws)
    try:
        collection = alias_target(client, cfg.name)
        if collection is None:
            raise CliError(f"no index named {cfg.name!r} in {ws.root}: run `ragtune index` first")
        from tasks.index import meta_dir
        from tasks.workspace import read_json

        meta = read_json(meta_dir(ws, cfg.name) / f"{collection.split('__', 1)[1]}.json", default={}) or {}
        if meta.get("config"):
            cfg = type(cfg).model_validate(meta["config"])  # search the way the collection was built
        if args.mode is None:  # the workspace's preferred mode (a sweep can set it), else hybrid
            from tasks.sweep import workspace_config

            args.mode = (workspace_config(ws).get("search") or {}).get("mode") or "hybrid"
        depth = candidate_depth(args.k, rcfg)
        hits = search_collection(client, collection, args.query, cfg, depth, args.mode, filters)
    finally:
        client.close()
    hits = rerank([args.query], [hits], args.k, rcfg, ws)[0]  # the top k as found when reranking is off
    fields = ("score", *(("rerank_score",) if rcfg.enabled else ()), "doc_id", "source_uri", "title",
              "section", "chunk_index", "text")
    out = {"query": args.query, "mode": args.mode, "collection": collection, "hits": [
        {k: h.get(k) for k in fields} for h in hits]}
    if rcfg.enabled:
        out["rerank"] = {"model": rcfg.model, "candidates": rcfg.candidates}
    if not args.json:
        for i, h in enumerate(out["hits"], 1):
            score = (f"rerank {h['rerank_score']:.3f}, {args.mode} {h['score']:.3f}" if rcfg.enabled
                     else f"{h['score']:.3f}")
            print(f"{i:>2}. [{score}] {where(h)}")
            print(f"    {h['source_uri']}  ({h['doc_id']}#chunk-{h['chunk_index']})")
            print(f"    {' '.join(h['text'].split())[:200]}")
    return out


def cmd_eval_retrieval(args: argparse.Namespace) -> dict[str, Any]:
    import shutil
    from pathlib import Path

    from tasks.qdrant import open_local
    from tasks.retrieval_eval import evaluate_retrieval
    from tasks.workspace import Workspace, new_run_id

    for label, path in (("corpus", args.corpus), ("queries", args.queries), ("qrels", args.qrels)):
        if not Path(path).is_file():
            raise CliError(f"--{label} file not found: {path}")
    cfg = _index_config(args)
    tmp = Workspace.from_env().ensure().runs / f"eval-{new_run_id()}"
    client = open_local(tmp)  # a scratch collection: the served index is never touched
    try:
        res = evaluate_retrieval(client, Path(args.corpus), Path(args.queries), Path(args.qrels), [args.mode], cfg)
    finally:
        client.close()
        shutil.rmtree(tmp, ignore_errors=True)
    m = res["modes"][args.mode]
    out = {k: m[k] for k in ("mode", "ndcg@10", "recall@10", "recall@100", "mrr@10", "queries")}
    if not args.json:
        print(f"{args.mode}: nDCG@10 {m['ndcg@10']:.4f}  recall@10 {m['recall@10']:.4f}  recall@100 "
              f"{m['recall@100']:.4f}  MRR@10 {m['mrr@10']:.4f}  ({m['queries']} queries, {res['documents']} "
              f"documents, {res['chunks']} chunks, {m['ms_per_query']:.1f} ms/query)")
    return out


def where(hit: dict[str, Any]) -> str:
    """`Title > section` for display (lazy import keeps `--help` light)."""
    from tasks.search import location

    return location(hit)


def _train_config(args: argparse.Namespace):
    from tasks.config import TrainConfig, load_yaml_config

    data = load_yaml_config(getattr(args, "config", None))
    data = data.get("train", data) if isinstance(data.get("train"), dict) else data
    cfg = TrainConfig.model_validate(data).model_dump()
    for key, value in (("max_steps", args.max_steps), ("learning_rate", args.learning_rate), ("run_id", args.run_id)):
        if value is not None:
            cfg[key] = value
    if args.qa:
        cfg["data"]["qa_paths"] = args.qa
    if args.no_rag_context:
        cfg["data"]["rag_context"] = False
    return TrainConfig.model_validate(cfg)


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from flows.train import train_flow

    cfg = _train_config(args)
    res = train_flow(cfg)
    out = {k: res[k] for k in ("run_id", "adapter_dir", "steps", "train_loss", "eval_loss", "device", "quantized")}
    out.update(dataset_version=res["dataset_version"], trained=res["trained"])
    if not args.json:
        fmt = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
        state = "trained" if res["trained"] else "finished before, not trained again"
        print(f"training run {res['run_id']} ({state})")
        print(f"  {res['steps']} steps on {res['device']} ({'4-bit NF4 QLoRA' if res['quantized'] else 'LoRA'}); "
              f"train loss {fmt(res['train_loss'])}, validation loss {fmt(res['eval_loss'])}")
        print(f"  SFT dataset version {res['dataset_version']}")
        print(f"  adapter: {res['adapter_dir']}")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ragtune", description="Keep a RAG index and a QLoRA-tuned LLM fresh.",
                                epilog=EPILOG)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    p.add_argument("--task-runner", choices=["threads", "dask", "ray"],
                   help="where flows run their tasks (default threads; RAGTUNE_TASK_RUNNER)")
    p.add_argument("--runner-address", metavar="ADDR", help="a Dask scheduler or Ray cluster address "
                   "(default: a local cluster; RAGTUNE_RUNNER_ADDRESS)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], dict[str, Any]], help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_, epilog=EPILOG)
        sp.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        sp.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
        sp.set_defaults(func=fn)
        return sp

    from flows.cli_models import add_commands
    from flows.demo import cmd_demo

    add("demo", cmd_demo, "the whole loop on the bundled sample: ingest, index, train, evaluate, promote")
    ing = add("ingest", cmd_ingest, "collect, clean, validate and publish a document dataset version")
    ing.add_argument("--source", action="append", metavar="PATH_OR_URL_OR_hf:NAME",
                     help="a folder or file, an http(s) URL, or hf:NAME (repeatable; default: the bundled sample)")
    ing.add_argument("--config", metavar="FILE", help="YAML file with IngestConfig fields (or an `ingest:` section)")
    ing.add_argument("--max-quarantine-fraction", type=float, metavar="F",
                     help="fail and publish nothing above this quarantined fraction (default 0.2)")
    ing.add_argument("--near-dedup-threshold", type=float, metavar="J", help="MinHash Jaccard threshold (default 0.8)")
    ing.add_argument("--no-redact-pii", action="store_true", help="keep emails, phone numbers and keys as they are")
    ing.add_argument("--dataset", metavar="NAME", help="dataset name under datasets/ (default docs)")
    ing.add_argument("--profile", choices=["auto", "knowledge", "web"],
                     help="cleaning profile (default auto: web for http(s) sources, knowledge for the rest)")
    ing.add_argument("--keep", action="append", metavar="PATH_GLOB",
                     help="accept inputs matching the glob past the quality filters, recorded as kept (repeatable)")
    idx = add("index", cmd_index, "chunk, embed and index the latest dataset version into Qdrant, then serve it")
    idx.add_argument("--config", metavar="FILE", help="YAML file with IndexConfig fields (or an `index:` section)")
    idx.add_argument("--name", help="index (alias) name (default docs)")
    idx.add_argument("--chunk-size", type=int, metavar="N", help="chunk size in embedding-model tokens")
    idx.add_argument("--chunk-overlap", type=int, metavar="N", help="overlap between chunks in tokens")
    idx.add_argument("--incremental", action="store_true",
                     help="update the served collection in place: embed only new and changed documents, delete "
                     "points of changed and removed ones (a full build when nothing is served yet)")
    idx.add_argument("--rollback", action="store_true", help="serve the previously served collection again")
    srch = add("search", cmd_search, "search the served index; every hit cites its source")
    srch.add_argument("query", help="the question or keywords")
    srch.add_argument("-k", type=int, default=10, help="number of hits (default 10)")
    srch.add_argument("--mode", choices=["dense", "sparse", "hybrid"],
                      help="default: the workspace config's search.mode (a sweep can set it), else hybrid")
    srch.add_argument("--filter", action="append", metavar="KEY=VALUE", help="payload filter (repeatable)")
    srch.add_argument("--name", help="index (alias) name (default docs)")
    srch.add_argument("--rerank", metavar="MODEL", help="rerank the hits with a cross-encoder: a folder, a "
                      "hub id, or `trained` (the workspace's reranker from `ragtune train-reranker`)")
    srch.add_argument("--candidates", type=int, metavar="N",
                      help="hits reranked, of which the best k are kept (default 20)")
    ev = add("eval-retrieval", cmd_eval_retrieval, "score retrieval on BEIR-format files (nDCG@10, recall, MRR)")
    ev.add_argument("--corpus", required=True, help="corpus.jsonl with {_id, title, text} lines")
    ev.add_argument("--queries", required=True, help="queries.jsonl with {_id, text} lines")
    ev.add_argument("--qrels", required=True, help="qrels TSV: query-id, corpus-id, score (with a header)")
    ev.add_argument("--mode", choices=["dense", "sparse", "hybrid"], default="hybrid", help="default hybrid")
    ev.add_argument("--config", metavar="FILE", help="YAML file with IndexConfig fields")
    ev.add_argument("--chunk-size", type=int, metavar="N", help="chunk size in embedding-model tokens")
    ev.add_argument("--chunk-overlap", type=int, metavar="N", help="overlap between chunks in tokens")
    ev.set_defaults(name=None)
    tr = add("train", cmd_train, "fine-tune a QLoRA adapter on the Q/A set, with context from the served index")
    tr.add_argument("--config", metavar="FILE", help="YAML file with TrainConfig fields (or a `train:` section)")
    tr.add_argument("--max-steps", type=int, metavar="N", help="optimizer steps (default 40)")
    tr.add_argument("--learning-rate", type=float, metavar="LR", help="peak learning rate (default 1e-3)")
    tr.add_argument("--qa", action="append", metavar="PATH",
                    help="Q/A JSONL file (repeatable; default data/sample/qa.jsonl)")
    tr.add_argument("--no-rag-context", action="store_true", help="closed-book: no retrieved passages in prompts")
    tr.add_argument("--run-id", metavar="ID", help="resume this run from its last checkpoint (or return it if done)")
    add_commands(add)
    from flows.cli_ops import add_commands as add_ops

    add_ops(add)
    from flows.cli_data import add_commands as add_data

    add_data(add)
    from flows.cli_serve import add_commands as add_serve

    add_serve(add)
    return p


def _one_line(exc: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err.get("loc", ()))
        return f"invalid configuration: {loc}: {err.get('msg')}" if loc else f"invalid configuration: {err.get('msg')}"
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return msg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _prepare_env(args.verbose)
    if args.task_runner:  # read when the flow modules are imported, below
        os.environ["RAGTUNE_TASK_RUNNER"] = args.task_runner
    if args.runner_address:
        os.environ["RAGTUNE_RUNNER_ADDRESS"] = args.runner_address
    real_stdout = sys.stdout
    try:
        # in JSON mode anything a library prints goes to stderr, so stdout holds exactly one object
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            out = args.func(args)
    except KeyboardInterrupt:
        print("ragtune: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the contract: one line, non-zero exit
        msg = _one_line(exc)
        print(f"ragtune {args.command}: error: {msg}", file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "error": msg}), file=real_stdout)
        return 1
    if args.json:
        print(json.dumps({"ok": True, **out}, ensure_ascii=False, default=str), file=real_stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
