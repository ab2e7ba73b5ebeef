"""`ragtune ingest | index | search | eval-retrieval | status | fates`: documents in, the served index out, and what
happened to every input."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from flows.cli import render
from flows.cli.common import CliError, stage_config, workspace
from tasks.core.config import workspace_section
from tasks.core.records import FATES
from tasks.core.workspace import new_run_id, read_json, read_jsonl
from tasks.index.config import IndexConfig, RerankConfig
from tasks.ingest.config import IngestConfig


def ingest_config(args: argparse.Namespace) -> IngestConfig:
    flags = {"dataset": args.dataset, "collect": {"sources": args.source},
             "validation": {"max_quarantine_fraction": args.max_quarantine_fraction},
             "clean": {"near_dedup_threshold": args.near_dedup_threshold, "profile": args.profile,
                       "redact_pii": False if args.no_redact_pii else None}}
    cfg = stage_config(args, "ingest", IngestConfig, **flags)
    if args.keep:  # --keep adds to the configured patterns
        flags["clean"]["keep"] = [*cfg.clean.keep, *args.keep]
        cfg = stage_config(args, "ingest", IngestConfig, **flags)
    return cfg


def cmd_ingest(args: argparse.Namespace) -> dict[str, Any]:
    from flows.ingest import ingest_flow, ingest_output  # Prefect: imported when a command runs
    from tasks.ingest.collect import resolve_sources

    cfg = ingest_config(args)
    resolve_sources(cfg.collect.sources)  # a typo in a path fails here, before Prefect starts
    out = ingest_output(ingest_flow(cfg))
    if not args.json:
        render.print_ingest(out)
    for w in out["warnings"] if args.json else []:  # stdout holds the one JSON object; a person reads stderr
        print(f"ragtune ingest: {w}", file=sys.stderr)
    return out


def index_config(args: argparse.Namespace) -> IndexConfig:
    return stage_config(args, "index", IndexConfig, name=getattr(args, "name", None),
                        chunk_size=getattr(args, "chunk_size", None), chunk_overlap=getattr(args, "chunk_overlap", None))


def cmd_index(args: argparse.Namespace) -> dict[str, Any]:
    cfg = index_config(args)
    if args.rollback:
        from flows.index import index_rollback_flow

        out = index_rollback_flow(cfg.name)
        if not args.json:
            print(f"index {cfg.name}: rolled back from {out['from']} to {out['to']}")
        return out
    from flows.index import index_flow

    out = index_flow(cfg, incremental=args.incremental)
    if not args.json:
        render.print_index(out)
    return out


def cmd_search(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.index.qdrant import open_client
    from tasks.index.rerank import candidate_depth, rerank
    from tasks.index.search import search_collection
    from tasks.index.served import require_served

    if args.candidates is not None and not args.rerank:
        raise CliError("--candidates needs --rerank MODEL")
    rcfg = RerankConfig(model=args.rerank, **({"candidates": args.candidates} if args.candidates is not None else {}))
    filters = {}
    for f in args.filter or []:
        key, sep, value = f.partition("=")
        if not sep or not key:
            raise CliError(f"--filter expects key=value, got {f!r}")
        filters[key] = value
    name = index_config(args).name
    ws = workspace()
    # the workspace's preferred mode (a sweep can set it), else hybrid
    mode = args.mode or workspace_section(ws, "search").get("mode") or "hybrid"
    client = open_client(ws)
    try:
        index = require_served(ws, name, client)  # searched the way the collection was built
        hits = search_collection(client, index.collection, args.query, index.config, candidate_depth(args.k, rcfg),
                                 mode, filters)
    finally:
        client.close()
    hits = rerank([args.query], [hits], args.k, rcfg, ws)[0]  # the top k as found when reranking is off
    fields = ("score", *(("rerank_score",) if rcfg.enabled else ()), "doc_id", "source_uri", "title",
              "section", "chunk_index", "text")
    out = {"query": args.query, "mode": mode, "collection": index.collection, "hits": [
        {k: h.get(k) for k in fields} for h in hits]}
    if rcfg.enabled:
        out["rerank"] = {"model": rcfg.model, "candidates": rcfg.candidates}
    if not args.json:
        render.print_hits(out)
    return out


def cmd_eval_retrieval(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.index.qdrant import open_local
    from tasks.index.retrieval_eval import evaluate_retrieval

    for label, path in (("corpus", args.corpus), ("queries", args.queries), ("qrels", args.qrels)):
        if not Path(path).is_file():
            raise CliError(f"--{label} file not found: {path}")
    cfg = index_config(args)
    tmp = workspace().ensure().runs / f"eval-{new_run_id()}"
    client = open_local(tmp)  # a scratch collection: the served index is never touched
    try:
        res = evaluate_retrieval(client, Path(args.corpus), Path(args.queries), Path(args.qrels), [args.mode], cfg)
    finally:
        client.close()
        shutil.rmtree(tmp, ignore_errors=True)
    m = res["modes"][args.mode]
    out = {k: m[k] for k in ("mode", "ndcg@10", "recall@10", "recall@100", "mrr@10", "queries")}
    if not args.json:
        render.print_retrieval_eval(out, res)
    return out


def cmd_status(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.ingest.publish import latest_version

    ws = workspace()
    version = latest_version(ws, args.dataset)
    stats = (read_json(ws.dataset_dir(args.dataset) / version / "stats.json", default={}) if version else {}) or {}
    dropped = [r for r in stats.get("top_reasons") or [] if r["fate"] != "accepted"]
    out = {"workspace": str(ws.root), "dataset": args.dataset, "dataset_version": version,
           "counts": stats.get("counts"), "profiles": stats.get("profiles", {}), "dropped": dropped,
           "warnings": stats.get("warnings", [])}
    if not args.json:
        render.print_status(out)
    return out


def cmd_fates(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.ingest.publish import manifest_path, select_fates

    path = manifest_path(workspace(), args.dataset, args.version, args.run)
    lines = read_jsonl(path)
    picked = select_fates(lines, args.fate, args.reason, args.unit)
    out = {"manifest": str(path), "total": len(lines), "matched": len(picked),
           "fates": picked[: args.limit] if args.limit else picked}
    if not args.json:
        render.print_fates(out, args.fate)
    return out


def add_commands(add: Any) -> None:
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
    st = add("status", cmd_status, "show the workspace's current dataset version, its counts and what was dropped")
    st.add_argument("--dataset", default="docs", help="dataset name (default docs)")
    f = add("fates", cmd_fates, "list inputs and their fates from a dataset manifest: find what was dropped and why")
    f.add_argument("--fate", choices=list(FATES), help="only this fate (e.g. filtered)")
    f.add_argument("--reason", metavar="R", help="only this reason code (e.g. placeholder) or reason text")
    f.add_argument("--unit", metavar="GLOB", help="only inputs whose unit or document id matches the glob")
    f.add_argument("--dataset", default="docs", help="dataset name (default docs)")
    f.add_argument("--version", help="a dataset version (default: the latest)")
    f.add_argument("--run", metavar="RUN_ID", help="the manifest of a rejected run, kept under quarantine/")
    f.add_argument("--limit", type=int, default=50, metavar="N", help="at most N lines (default 50; 0: all)")
