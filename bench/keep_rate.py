"""Keep rate: does cleaning keep every legitimate document and drop the garbage? Measured, per profile.

Runs collect -> clean -> validate (the stages that decide a document's fate before publishing) over the
labelled set in data/cleaning_eval/ (legit/ and garbage/, labels.jsonl), once per cleaning profile, and
once with the code of an earlier commit (`--before REF`, run from a temporary git worktree) as the
baseline of the same run. Prints, per profile, the share of legitimate documents accepted and of garbage
not accepted, and lists every false decision with its reason. Then the template case: reports with the
same wording and different measured values, which near-duplicate detection must not remove.

Targets for `knowledge`: keep >= 99% of legitimate documents, drop >= 95% of garbage.

    python bench/keep_rate.py [--before ce343fb] [--held-out] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT / "data" / "cleaning_eval"
BEFORE = "ce343fb"  # the last commit before the knowledge profile: Gopher rules and 50-character minimum for all
TARGETS = {"keep": 0.99, "drop": 0.95}


def fates_of(profile: str | None, out: Path) -> dict[str, dict[str, str]]:
    """{path relative to data/cleaning_eval: {fate, reason}} for one run of collect, clean and validate.
    `profile` None: the cleaning config's defaults (whatever the code being measured has)."""
    from tasks.core.records import read_fates, read_records
    from tasks.core.workspace import Workspace
    from tasks.ingest.clean import clean_records
    from tasks.ingest.collect import collect_sources
    from tasks.ingest.config import IngestConfig
    from tasks.ingest.validate import validate_records

    sources = [str(EVAL / "legit"), str(EVAL / "garbage")]
    cfg = IngestConfig.model_validate({"collect": {"sources": sources}})
    if profile:
        cfg.clean.profile = profile
    ws = Workspace(out / "ws").ensure()
    col = collect_sources(cfg.collect, ws, out / "collect")
    cln = clean_records(Path(col.records_path), cfg.clean, out / "clean")
    val = validate_records(Path(cln.records_path), cfg.validation, ws, "keep-rate", out / "validate",
                           cfg.clean.redact_pii, [Path(col.fates_path)])
    result: dict[str, dict[str, str]] = {}

    def rel(unit: str) -> str:
        return str(Path(unit.split("#", 1)[0]).resolve().relative_to(EVAL))

    for r in read_records(Path(val.records_path)):
        result[rel(r["unit"])] = {"fate": "accepted", "reason": "kept" if "kept" in r["metadata"] else ""}
    for p in (col.fates_path, cln.fates_path, val.fates_path):
        for f in read_fates(Path(p)):
            result[rel(f.unit)] = {"fate": f.fate, "reason": f.reason}
    return result


def run_before(ref: str, out: Path) -> dict[str, dict[str, str]] | None:
    """The same measurement with the code of commit `ref` (its own tasks/ package, its own defaults)."""
    tree = out / "before-tree"
    made = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree), ref],
                          capture_output=True, text=True)
    if made.returncode:
        print(f"baseline skipped: cannot check out {ref} ({made.stderr.strip().splitlines()[-1]})", file=sys.stderr)
        return None
    try:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        code = ("import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
                "import keep_rate as k; print(json.dumps(k.fates_of(None, Path(sys.argv[2]))))")
        res = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(out / "before")],
                             capture_output=True, text=True, env=env, cwd=tree)
        if res.returncode:
            print(f"baseline failed: {res.stderr.strip().splitlines()[-1]}", file=sys.stderr)
            return None
        return json.loads(res.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)


def score(labels: list[dict], fates: dict[str, dict[str, str]]) -> dict:
    legit = [x for x in labels if x["label"] == "legit"]
    garbage = [x for x in labels if x["label"] == "garbage"]
    fate = {x["path"]: fates.get(x["path"], {"fate": "missing", "reason": "no fate recorded"}) for x in labels}
    false_drops = [{**x, **fate[x["path"]]} for x in legit if fate[x["path"]]["fate"] != "accepted"]
    false_keeps = [{**x, **fate[x["path"]]} for x in garbage if fate[x["path"]]["fate"] == "accepted"]
    return {"legit": len(legit), "garbage": len(garbage),
            "keep_rate": 1 - len(false_drops) / len(legit), "drop_rate": 1 - len(false_keeps) / len(garbage),
            "false_drops": false_drops, "false_keeps": false_keeps,
            "missing": [p for p, f in fate.items() if f["fate"] == "missing"]}


def template_case(n: int = 200) -> dict[str, int]:
    """`n` reports in one wording, each pair differing in one measured value: how many each profile keeps."""
    from tasks.core.records import read_records, write_records
    from tasks.ingest.clean import clean_records
    from tasks.ingest.config import CleanConfig

    body = ("Daily report for probe {i}. The study measured a mean latency of {v} ms across the Lisbon region; "
            "all checks passed and no incident was opened. Availability over the period stayed within the "
            "agreed objective, and the next calibration is scheduled as usual by the operations team.")
    recs = [{"doc_id": f"r{i:04d}.md", "unit": f"reports/r{i:04d}.md", "source_uri": f"file:///reports/r{i:04d}.md",
             "title": "", "text": body.format(i=1, v=100 + i), "metadata": {}, "content_hash": "", "raw_hash": "",
             "format": "md", "collected_at": "t"} for i in range(n)]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        write_records(Path(tmp) / "in.parquet", recs)
        for profile in ("knowledge", "web"):
            res = clean_records(Path(tmp) / "in.parquet", CleanConfig(profile=profile, min_chars=1),
                                Path(tmp) / profile)
            out[profile] = len(read_records(Path(res.records_path)))
    return out


def held_out(scifact: Path, max_files: int = 6000) -> dict:
    """Legitimate text the rules were not tuned on: SciFact abstracts (when the folder is there) and the files of
    this Python's standard library that ragtune reads (code, docs, test data in many languages and codecs).
    Every drop is listed: most should be what the rules are for (minified bundles, empty templates)."""
    import random
    import sysconfig

    from tasks.ingest.config import DEFAULT_BOILERPLATE, CleanConfig
    from tasks.ingest.filters import clean_document, compile_boilerplate
    from tasks.ingest.readers import FieldNames, format_for, parse_unit

    cfg, pattern = CleanConfig(profile="knowledge"), compile_boilerplate(DEFAULT_BOILERPLATE)
    seen: dict[str, int] = {}
    dropped: list[tuple[str, str]] = []

    def judge(group: str, name: str, text: str, fmt: str) -> None:
        seen[group] = seen.get(group, 0) + 1
        rec = {"doc_id": name, "unit": name, "source_uri": f"file:///{name}", "title": "", "text": text,
               "metadata": {}, "format": fmt}
        out = clean_document(rec, cfg, pattern)
        if out.reason:
            dropped.append((name, out.reason))

    if (scifact / "corpus.jsonl").exists():
        for line in (scifact / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            judge("scifact", f"scifact/{d['_id']}", f"{d['title']}\n\n{d['text']}", "txt")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.rglob("*") if p.is_file() and "site-packages" not in p.parts
                   and format_for(p.name) not in (None, "json", "jsonl", "parquet", "pdf"))
    random.Random(0).shuffle(files)
    for p in files[:max_files]:
        data = p.read_bytes()
        if len(data) <= 2_000_000:
            for parsed in parse_unit(data, format_for(p.name), str(p), str(p.relative_to(stdlib)), FieldNames()):
                if parsed.error is None:
                    judge("stdlib", parsed.doc_id, parsed.text or "", parsed.fmt)
    return {"seen": seen, "dropped": dropped}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default=BEFORE, help="git ref of the baseline code (empty: skip)")
    ap.add_argument("--json", metavar="FILE", help="write every figure and false decision to FILE")
    ap.add_argument("--held-out", action="store_true", help="also judge SciFact abstracts and the Python standard "
                    "library's files (legitimate text the rules were not tuned on) with the knowledge profile")
    ap.add_argument("--scifact", default=str(ROOT.parent / "shared" / "data" / "scifact"), help="SciFact folder")
    args = ap.parse_args()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import logging

    logging.getLogger("trafilatura").setLevel(logging.ERROR)  # "discarding data" for every page without text
    sys.path.insert(0, str(ROOT))
    labels = [json.loads(line) for line in (EVAL / "labels.jsonl").read_text(encoding="utf-8").splitlines() if line]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.before:
            before = run_before(args.before, Path(tmp))
            if before is not None:
                results[f"before ({args.before})"] = score(labels, before)
        for profile in ("knowledge", "web"):
            results[profile] = score(labels, fates_of(profile, Path(tmp) / profile))
    print(f"{'profile':<18} {'legit kept':>16} {'garbage dropped':>18}")
    for name, r in list(results.items()):
        kept = r["legit"] - len(r["false_drops"])
        dropped = r["garbage"] - len(r["false_keeps"])
        print(f"{name:<18} {kept:>4}/{r['legit']:<4} {r['keep_rate']:>6.1%} {dropped:>6}/{r['garbage']:<4} "
              f"{r['drop_rate']:>6.1%}")
    for name, r in results.items():
        print(f"\n== {name}: {len(r['false_drops'])} legitimate documents not accepted, {len(r['false_keeps'])} "
              "garbage inputs accepted")
        for x in r["false_drops"]:
            print(f"  lost  {x['path']:<58} [{x['shape']}/{x['lang']}] {x['fate']}: {x['reason'][:90]}")
        for x in r["false_keeps"]:
            print(f"  kept  {x['path']:<58} [{x['shape']}/{x['lang']}]")
    if args.held_out:
        ho = held_out(Path(args.scifact))
        total = sum(ho["seen"].values())
        print(f"\nheld-out legitimate text, knowledge profile: {len(ho['dropped'])} of {total} dropped "
              f"({', '.join(f'{k} {v}' for k, v in ho['seen'].items())})")
        for name, reason in ho["dropped"]:
            print(f"  drop  {name:<58} {reason[:80]}")
        results["held_out"] = ho
    tmpl = template_case()
    print(f"\ntemplate reports (200, same wording, one measured value each): knowledge keeps {tmpl['knowledge']}, "
          f"web keeps {tmpl['web']}")
    k = results["knowledge"]
    met = k["keep_rate"] >= TARGETS["keep"] and k["drop_rate"] >= TARGETS["drop"]
    print(f"\nknowledge targets (keep >= {TARGETS['keep']:.0%}, drop >= {TARGETS['drop']:.0%}): "
          f"{'met' if met else 'MISSED'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"profiles": results, "template_reports": tmpl}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
