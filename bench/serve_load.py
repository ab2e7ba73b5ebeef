"""Serving under load: `ragtune serve` as a subprocess, N concurrent clients (1, 4, 16) on a question mix with 30%
repeats, batched generation against one-at-a-time generation in the same run, and a promotion in the middle of
the 16-client batched run.

Target: batched >= 2x the requests/s of one-at-a-time at 16 clients; 0 errors, also across the promotion.

The server runs on a scratch workspace that shares the given workspace's models, datasets and index (read only)
and has its own registry copy, answer cache and logs, so each mode starts with an empty cache and the user's
workspace is never changed. Needs a workspace with a served index (`make demo` makes one).

    python bench/serve_load.py [--home .ragtune] [--clients 1,4,16] [--requests-per-client 6] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def scratch_workspace(home: Path, dest: Path) -> Path:
    """Links to the workspace's read-only parts; a copy of the registry (the promotion moves its aliases) and a
    models folder of its own (the promotion adds an adapter)."""
    (dest / "models").mkdir(parents=True)
    for name in ("datasets", "indexes", "qdrant", "sources"):
        if (home / name).exists():
            (dest / name).symlink_to((home / name).resolve())
    for run in (home / "models").iterdir() if (home / "models").is_dir() else []:
        (dest / "models" / run.name).symlink_to(run.resolve())  # the promotion adds its adapter beside these
    if (home / "registry").exists():
        shutil.copytree(home / "registry", dest / "registry")
    return dest


def question_mix(n: int, pool: list[str], rng: random.Random, repeat: float = 0.3) -> list[str]:
    """n questions: each one repeats an earlier question of the mix with probability `repeat`, else is new."""
    out: list[str] = []
    fresh = iter(pool)
    for _ in range(n):
        out.append(rng.choice(out) if out and rng.random() < repeat else next(fresh))
    return out


def start(home: Path, args: argparse.Namespace, batched: bool) -> tuple[subprocess.Popen, str]:
    from tests.integration.helpers import start_server

    extra = (["--max-batch", "16", "--batch-window-ms", "25", "--batch-max-wait-ms", str(args.max_wait_ms)] if batched
             else ["--max-batch", "1", "--batch-window-ms", "0"])
    # the clients share one address here: no per-client rate limit, and room for all of them in the queue
    return start_server(home, "--max-new-tokens", str(args.max_new_tokens), "--ask-rate", "", "--max-queue", "64",
                        *extra, timeout_s=300)


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of the server process, MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def load(url: str, questions: list[list[str]], during=None) -> dict:
    """Each client thread asks its list in order; `during` runs in the main thread once the load has started."""
    results: list[dict] = []
    lock = threading.Lock()

    def client(qs: list[str]) -> None:
        with httpx.Client(timeout=600) as c:
            for q in qs:
                t = time.perf_counter()
                try:
                    r = c.post(f"{url}/v1/ask", json={"question": q})
                    body = r.json()
                    row = {"status": r.status_code, "cached": body.get("cached", False), "model": body.get("model")}
                except (httpx.HTTPError, ValueError) as exc:
                    row = {"status": type(exc).__name__, "cached": False, "model": None}
                row["s"] = time.perf_counter() - t
                with lock:
                    results.append(row)

    threads = [threading.Thread(target=client, args=(qs,)) for qs in questions]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    swap = during() if during else None
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    lat = sorted(r["s"] for r in results)
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
    return {"requests": len(results), "rps": len(results) / wall, "p50_ms": q[49] * 1000, "p95_ms": q[94] * 1000,
            "p99_ms": q[98] * 1000, "cache_hit_rate": sum(r["cached"] for r in results) / len(results),
            "errors": sum(r["status"] != 200 for r in results), "wall_s": wall,
            "models": sorted({r["model"] for r in results if r["model"]}), "swap": swap}


def batch_sizes(url: str) -> dict:
    """Generation batches the server ran and their mean size (its Prometheus histogram)."""
    from prometheus_client.parser import text_string_to_metric_families

    got = {s.name: s.value for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
           for s in f.samples if s.name.startswith("ragtune_generation_batch_size_")}
    n = got.get("ragtune_generation_batch_size_count", 0)
    return {"batches": int(n), "mean_size": round(got.get("ragtune_generation_batch_size_sum", 0) / n, 2) if n else None}


def model_ceiling(home: Path, questions: list[str], max_new_tokens: int) -> dict:
    """The same engine in this process, no HTTP: 16 server prompts (retrieved context included) generated in one
    batch against one by one: what batching alone buys on this machine for prompts of this length."""
    from tasks.core.workspace import Workspace
    from tasks.serve.config import ServeConfig
    from tasks.serve.engine import Engine, desired_state
    from tasks.train.generate import generate_shrinking
    from tasks.train.prompt import build_messages, format_context

    ws = Workspace(home)
    cfg = ServeConfig(max_new_tokens=max_new_tokens)
    engine = Engine(ws, cfg, desired_state(ws, cfg))
    try:
        found = engine.retriever.search_many([(q, engine.data.context_k, None) for q in questions])
        prompts = [build_messages(q, "", format_context(h, engine.data.context_chars), engine.data.system_prompt)[:-1]
                   for q, (h, _) in zip(questions, found, strict=True)]
        batched = serial = float("inf")
        for _ in range(2):  # the best of two: the first run of a shape also builds its CPU kernels
            t = time.perf_counter()
            generate_shrinking(engine.llm, engine.tokenizer, prompts, max_new_tokens)
            batched = min(batched, time.perf_counter() - t)
            t = time.perf_counter()
            for p in prompts:
                generate_shrinking(engine.llm, engine.tokenizer, [p], max_new_tokens)
            serial = min(serial, time.perf_counter() - t)
        n_tokens = [len(engine.tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True)["input_ids"])
                    for p in prompts]
    finally:
        engine.close()
    return {"prompts": len(prompts), "batched_s": round(batched, 2), "serial_s": round(serial, 2),
            "ratio": round(serial / batched, 2), "mean_prompt_tokens": round(statistics.mean(n_tokens))}


def promote_midway(home: Path, base_model: str, url: str, delay_s: float) -> dict:
    """Promote a new champion (a fresh LoRA adapter) while the clients run; returns how long the swap took."""
    from tests.integration.helpers import register_champion

    time.sleep(delay_s)
    t = time.perf_counter()
    version = register_champion(home, base_model, f"bench-{int(time.time())}", seed=7)
    while httpx.get(f"{url}/readyz", timeout=10).json().get("model") != version:
        time.sleep(0.2)
    return {"version": version, "promote_to_serving_s": round(time.perf_counter() - t, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", default=os.environ.get("RAGTUNE_HOME", ".ragtune"))
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests-per-client", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=250, help="the batched server's --batch-max-wait-ms")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    home = Path(args.home).resolve()
    from tasks.core.workspace import Workspace, read_jsonl
    from tasks.serve.ask import serving_model
    from tasks.train.model import resolve_base_model

    model = serving_model(Workspace(home))
    base = resolve_base_model(Workspace(home), model["base_model"])
    levels = [int(x) for x in args.clients.split(",")]
    pool = [r["question"] for r in read_jsonl(ROOT / "data" / "sample" / "qa.jsonl")]
    rng = random.Random(0)
    rng.shuffle(pool)
    mixes, used = {}, 0  # the same questions for both modes; each level draws new ones
    for n in levels:
        total = n * args.requests_per_client
        mix = question_mix(total, pool[used:], random.Random(n))
        used += len(set(mix))
        mixes[n] = [mix[i::n] for i in range(n)]
    top = max(levels)
    promo_mix = question_mix(top * args.requests_per_client, pool[used:], random.Random(99))
    mixes["promotion"] = [promo_mix[i::top] for i in range(top)]  # new questions: not answered from the cache
    rows = []
    for batched in (True, False):
        with tempfile.TemporaryDirectory(prefix="ragtune-bench-") as tmp:
            ws = scratch_workspace(home, Path(tmp) / "ws")
            proc, url = start(ws, args, batched)
            try:
                httpx.post(f"{url}/v1/ask", json={"question": "warm-up question about the handbook"}, timeout=600)
                runs = [(n, False) for n in levels] + ([(max(levels), True)] if batched else [])
                for n, promote in runs:  # the promotion is a run of its own: the ratio compares steady states
                    during = (lambda u=url, w=ws: promote_midway(w, base, u, 3.0)) if promote else None
                    res = load(url, mixes["promotion" if promote else n], during)
                    cur, peak = rss_mb(proc.pid)
                    rows.append({"mode": ("batched" if batched else "one-at-a-time") + (" + promotion" if promote else ""),
                                 "clients": n, **res, "rss_mb": round(cur), "peak_rss_mb": round(peak)})
                    print(json.dumps(rows[-1]), file=sys.stderr)
                rows[-1]["batch_sizes"] = batch_sizes(url)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    with tempfile.TemporaryDirectory(prefix="ragtune-bench-") as tmp:
        ceiling = model_ceiling(scratch_workspace(home, Path(tmp) / "ws"), pool[used:used + 16], args.max_new_tokens)
    by = {(r["mode"], r["clients"]): r for r in rows}
    ratio = by[("batched", top)]["rps"] / by[("one-at-a-time", top)]["rps"]
    out = {"rows": rows, "ratio_at_max_clients": ratio, "max_clients": top, "max_new_tokens": args.max_new_tokens,
           "errors": sum(r["errors"] for r in rows), "model_ceiling": ceiling}
    if args.json:
        print(json.dumps(out))
        return
    print(f"{'mode':<14}{'clients':>8}{'req':>5}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'cache':>7}"
          f"{'errors':>7}{'RSS MB':>8}")
    for r in rows:
        print(f"{r['mode']:<14}{r['clients']:>8}{r['requests']:>5}{r['rps']:>8.2f}{r['p50_ms']:>9.0f}{r['p95_ms']:>9.0f}"
              f"{r['p99_ms']:>9.0f}{r['cache_hit_rate']:>7.0%}{r['errors']:>7}{r['peak_rss_mb']:>8}")
    promo = by.get(("batched + promotion", top))
    if promo and promo["swap"]:
        print(f"promotion during a {top}-client batched run: {promo['swap']['version']} served "
              f"{promo['swap']['promote_to_serving_s']} s after the alias moved; {promo['errors']} failed requests; "
              f"models answering: {promo['models']}")
    for r in rows:
        if r.get("batch_sizes"):
            print(f"{r['mode'].split(' +')[0]} server: {r['batch_sizes']['batches']} generation batches, mean size "
                  f"{r['batch_sizes']['mean_size']}")
    print(f"model alone, {ceiling['prompts']} server prompts of ~{ceiling['mean_prompt_tokens']} tokens: one batch "
          f"{ceiling['batched_s']} s, one by one {ceiling['serial_s']} s ({ceiling['ratio']}x)")
    print(f"batched / one-at-a-time at {top} clients: {ratio:.2f}x (target >= 2x); errors in all: {out['errors']}")


if __name__ == "__main__":
    main()
