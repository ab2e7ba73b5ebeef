"""Ingest throughput: collect + clean + dedup + validate + publish, in-process, at 1k, 10k and 50k documents.

Targets: at least 1,000 docs/s at 10k on a 2-core machine, and 50k taking no more than 6x the 10k time
(no quadratic step). The baseline measured in the same run is the I/O floor: reading and decoding the
same files, so the table also shows what the pipeline costs on top of touching the bytes.

    python bench/ingest.py [--sizes 1000 10000 50000] [--workers 0]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.corpus import generate_corpus  # noqa: E402


def read_floor(src: Path) -> float:
    """Seconds to list, read and decode every file: the least any ingest can do."""
    t = time.perf_counter()
    for p in sorted(src.rglob("*")):
        if p.is_file():
            p.read_bytes().decode("utf-8")
    return time.perf_counter() - t


def run_once(src: Path, home: Path, workers: int) -> dict[str, float]:
    from tasks.core.records import read_fates, read_records
    from tasks.core.workspace import Workspace
    from tasks.ingest.clean import clean_records
    from tasks.ingest.collect import collect_sources
    from tasks.ingest.config import IngestConfig
    from tasks.ingest.publish import count_fates, manifest_lines, publish_dataset
    from tasks.ingest.validate import check_quarantine_policy, validate_records

    cfg = IngestConfig()
    cfg.collect.sources = [str(src)]
    cfg.clean.workers = workers
    ws = Workspace(home).ensure()
    stage = ws.runs / "bench"
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    col = collect_sources(cfg.collect, ws, stage / "collect")
    times["collect"] = time.perf_counter() - t0
    t = time.perf_counter()
    cln = clean_records(Path(col.records_path), cfg.clean, stage / "clean")
    times["clean+dedup"] = time.perf_counter() - t
    t = time.perf_counter()
    val = validate_records(Path(cln.records_path), cfg.validation, ws, "bench", stage / "validate",
                           cfg.clean.redact_pii, [Path(col.fates_path)])
    fate_paths = [Path(col.fates_path), Path(cln.fates_path), Path(val.fates_path)]
    counts = count_fates(manifest_lines(read_records(Path(val.records_path)),
                                        [f for p in fate_paths for f in read_fates(p)]))
    check_quarantine_policy(counts["seen"], counts["quarantined"], cfg.validation, val.table_failures, val.passed)
    times["validate"] = time.perf_counter() - t
    t = time.perf_counter()
    pub = publish_dataset(ws, "docs", "bench", Path(val.records_path), fate_paths, {}, {}, None)
    times["publish"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t0
    times["accepted"] = pub.counts["accepted"]
    times["duplicate"] = pub.counts["duplicate"]
    return times


def warm_up(tmp: Path, workers: int) -> None:
    """Import and initialise the libraries once, so the sizes compare pipeline work, not import time."""
    src = tmp / "warm"
    generate_corpus(src, 50, seed=99)
    run_once(src, tmp / "warm-ws", workers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 50_000])
    ap.add_argument("--workers", type=int, default=0, help="clean workers (0: automatic)")
    ap.add_argument("--keep", action="store_true", help="keep the generated folders")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ragtune-bench-"))
    try:
        t = time.perf_counter()
        warm_up(tmp, args.workers)
        print(f"warm-up (imports, Great Expectations context): {time.perf_counter() - t:.1f} s\n")
        rows = []
        for n in args.sizes:
            src = tmp / f"src-{n}"
            made = generate_corpus(src, n, seed=n)
            floor = read_floor(src)
            r = run_once(src, tmp / f"ws-{n}", args.workers)
            rows.append((n, made, floor, r))
        print(f"{'docs':>7} {'total s':>8} {'docs/s':>8} {'read floor s':>12} {'x floor':>8}  "
              f"{'collect':>8} {'clean+dedup':>11} {'validate':>8} {'publish':>8}  accepted/dup (expected dup)")
        for n, made, floor, r in rows:
            print(f"{n:>7} {r['total']:>8.2f} {n / r['total']:>8.0f} {floor:>12.2f} {r['total'] / floor:>8.1f}  "
                  f"{r['collect']:>8.2f} {r['clean+dedup']:>11.2f} {r['validate']:>8.2f} {r['publish']:>8.2f}  "
                  f"{int(r['accepted'])}/{int(r['duplicate'])} ({made['exact'] + made['near']})")
        by_n = {n: r["total"] for n, _, _, r in rows}
        print()
        if 10_000 in by_n:
            rate = 10_000 / by_n[10_000]
            print(f"target 1: {rate:.0f} docs/s at 10k (target >= 1000): {'PASS' if rate >= 1000 else 'MISS'}")
        if 10_000 in by_n and 50_000 in by_n:
            ratio = by_n[50_000] / by_n[10_000]
            print(f"target 2: 50k time / 10k time = {ratio:.2f} (target <= 6, linear would be 5): "
                  f"{'PASS' if ratio <= 6 else 'MISS'}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
