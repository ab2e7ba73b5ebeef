"""The demo, step by step: wall time, CPU time and peak resident memory of each step (start-up, ingest, index,
train, evaluate, calibrate, compare) for this working tree against a baseline commit, in the same run.

Each tree runs `python -m flows.cli demo --json` as a subprocess from an empty workspace and an empty Prefect
home, one after the other (baseline first unless `--current-first`). The baseline is checked out into a
temporary git worktree. Step boundaries come from the flows' own log lines (the start of the ingest, index,
train, promote and compare flows, and the end of the promote flow, after which the demo calibrates).

Peak RSS per step is exact, not sampled: at every boundary the demo process's high-water mark (VmHWM) is read,
then reset (`/proc/PID/clear_refs` 5, Linux 4.0+). The Prefect server that ephemeral mode starts runs inside
the demo process; the tree's total RSS (any child processes added) is sampled every 0.25 s as well. CPU
seconds (user + system of the demo process and its children) depend less on other load than wall time does.

    python bench/demo_profile.py [--baseline REV] [--current REV] [--repeat N] [--json OUT] [--keep DIR]

`--baseline` defaults to HEAD~1, `--current` to HEAD (commit what you want measured). Both are checked out in
turn at the same path, because a dataset version covers its records' source addresses (`file:///...`) and so
the checkout's location. Only the demo's results that must not change are compared (dataset version, metrics
to 4 decimals).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("start-up", "ingest", "index", "train", "evaluate", "calibrate", "compare", "finish")
# flow name -> the demo step it begins (evaluate runs inside promote; questions belongs to training's data)
FLOW_STEP = {"ingest": "ingest", "index": "index", "questions": "train", "train": "train", "promote": "evaluate",
             "evaluate": "evaluate", "compare": "compare"}
_BEGIN = re.compile(r"Beginning (?:sub)?flow run '([^']+)' for flow '([^']+)'")
_FINISHED = re.compile(r"Flow run '([^']+)' - Finished in state")
TICKS = os.sysconf("SC_CLK_TCK")


def step_event(line: str, run_flows: dict[str, str]) -> str | None:
    """The step a log line starts, if any. `run_flows` (flow run name -> flow name) is filled as flows begin, so
    the end of the promote flow, which starts the calibration, can be recognised by its run name."""
    m = _BEGIN.search(line)
    if m:
        run_flows[m.group(1)] = m.group(2)
        return FLOW_STEP.get(m.group(2))
    m = _FINISHED.search(line)
    if m and run_flows.get(m.group(1)) == "promote":
        return "calibrate"
    if m and run_flows.get(m.group(1)) == "compare":
        return "finish"
    return None


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (t / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def _cpu_s(pid: int) -> float:
    """User + system seconds of the process and of its waited-for children."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return float("nan")
    return sum(int(x) for x in f[11:15]) / TICKS


class Profile:
    """Per-step figures of one demo process, fed by its stderr lines and a sampling thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.run_flows, self.lock = pid, {}, threading.Lock()
        self.step, self.t0 = "start-up", time.perf_counter()
        self.cpu0, self.tree_peak = _cpu_s(pid), 0
        self.steps: dict[str, dict[str, float]] = {}
        self.last_cpu = self.cpu0

    def line(self, text: str) -> None:
        step = step_event(text, self.run_flows)
        if step and step != self.step and STEPS.index(step) > STEPS.index(self.step):
            self.close(step)

    def sample(self) -> None:
        with self.lock:
            self.tree_peak = max(self.tree_peak, sum(_status_kb(p, "VmRSS") for p in _tree(self.pid)))
            cpu = _cpu_s(self.pid)
            if cpu == cpu:  # not NaN: the process still exists
                self.last_cpu = cpu

    def close(self, next_step: str | None) -> None:
        with self.lock:
            now, hwm = time.perf_counter(), _status_kb(self.pid, "VmHWM")
            cpu = _cpu_s(self.pid)
            cpu = cpu if cpu == cpu else self.last_cpu
            self.steps[self.step] = {"wall_s": now - self.t0, "cpu_s": cpu - self.cpu0,
                                     "peak_rss_mb": hwm / 1024 if hwm else float("nan"),
                                     "tree_peak_rss_mb": max(self.tree_peak, hwm) / 1024}
            if next_step:
                with contextlib.suppress(OSError):  # restart the high-water mark
                    Path(f"/proc/{self.pid}/clear_refs").write_text("5")
                self.step, self.t0, self.cpu0, self.tree_peak = next_step, now, cpu, 0


def run_demo(tree: Path, work: Path, log_path: Path) -> dict:
    """One demo from an empty workspace in `tree`; returns {steps, total, result (the demo's JSON)}."""
    env = {**os.environ, "PYTHONPATH": str(tree), "RAGTUNE_HOME": str(work / ".ragtune"),
           "PREFECT_HOME": str(work / ".prefect"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "false",
           "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "INFO"}  # the flows' log lines mark the steps
    work.mkdir(parents=True, exist_ok=True)
    out_path = work / "demo.json"
    t = time.perf_counter()
    with open(out_path, "wb") as out, open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "demo", "--json"], cwd=tree, env=env,
                                stdout=out, stderr=subprocess.PIPE, text=True, bufsize=1)
        prof, stop = Profile(proc.pid), threading.Event()

        def sampler() -> None:
            while not stop.wait(0.25):
                prof.sample()

        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        last_hwm = 0
        for line in proc.stderr:
            log.write(line)
            log.flush()
            prof.line(line)
            last_hwm = _status_kb(proc.pid, "VmHWM") or last_hwm
        # the process is about to exit: read what is left before it is reaped
        stop.set()
        th.join()
        prof.close(None)
        if prof.steps[prof.step]["peak_rss_mb"] != prof.steps[prof.step]["peak_rss_mb"]:
            prof.steps[prof.step]["peak_rss_mb"] = last_hwm / 1024
        rc = proc.wait()
    total = time.perf_counter() - t
    if rc != 0:
        raise RuntimeError(f"demo in {tree} exited {rc}; log: {log_path}")
    return {"steps": prof.steps, "total_s": total, "peak_rss_mb": max(s["peak_rss_mb"] for s in prof.steps.values()),
            "result": json.loads(out_path.read_text())}


def results_key(demo: dict) -> dict:
    """What must not change between the two trees: the dataset version and the metrics, to 4 decimals."""
    r = demo["result"]
    rnd = lambda d: {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}  # noqa: E731
    cells = r.get("comparison", {}).get("cells", {})
    return {"dataset_version": r["dataset_version"], "metrics": {s: rnd(m) for s, m in r["metrics"].items()},
            "compare": {k: rnd({m: v for m, v in c["metrics"].items()}) for k, c in cells.items()}}


def table(label_a: str, a: dict, label_b: str, b: dict) -> str:
    head = (f"{'step':<10} {label_a + ' s':>10} {label_b + ' s':>10} {'ratio':>6}   {label_a + ' cpu':>10} "
            f"{label_b + ' cpu':>10}   {label_a + ' MB':>10} {label_b + ' MB':>10} {'ratio':>6}")
    lines = [head]
    for step in STEPS:
        x, y = a["steps"].get(step), b["steps"].get(step)
        if not x or not y:
            continue
        lines.append(f"{step:<10} {x['wall_s']:>10.1f} {y['wall_s']:>10.1f} {y['wall_s'] / x['wall_s']:>6.2f}   "
                     f"{x['cpu_s']:>10.1f} {y['cpu_s']:>10.1f}   {x['peak_rss_mb']:>10.0f} {y['peak_rss_mb']:>10.0f} "
                     f"{y['peak_rss_mb'] / x['peak_rss_mb']:>6.2f}")
    cpu = lambda d: sum(s["cpu_s"] for s in d["steps"].values())  # noqa: E731
    lines.append(f"{'total':<10} {a['total_s']:>10.1f} {b['total_s']:>10.1f} {b['total_s'] / a['total_s']:>6.2f}   "
                 f"{cpu(a):>10.1f} {cpu(b):>10.1f}   {a['peak_rss_mb']:>10.0f} {b['peak_rss_mb']:>10.0f} "
                 f"{b['peak_rss_mb'] / a['peak_rss_mb']:>6.2f}")
    return "\n".join(lines)


def resolve(rev: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], check=True, capture_output=True,
                          text=True).stdout.strip()


@contextlib.contextmanager
def checkout(sha: str, tree: Path):
    """`sha` checked out at `tree` for the duration (the same path for every revision)."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), sha], check=True)
    try:
        yield tree
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="HEAD~1", help="git revision to compare against")
    ap.add_argument("--current", default="HEAD", help="git revision to measure")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each tree, alternating")
    ap.add_argument("--current-first", action="store_true", help="run the current tree before the baseline")
    ap.add_argument("--json", type=Path, help="write every run's figures to this file")
    ap.add_argument("--keep", type=Path, help="keep the workspaces and logs under this folder")
    args = ap.parse_args()
    parent = Path(args.keep or tempfile.mkdtemp(prefix="demo-profile-"))
    parent.mkdir(parents=True, exist_ok=True)
    revs = {"base": resolve(args.baseline), "new": resolve(args.current)}
    order = ["new", "base"] if args.current_first else ["base", "new"]
    runs: dict[str, list[dict]] = {"base": [], "new": []}
    for i in range(args.repeat):
        for name in order:
            work = parent / f"{name}-{i}"
            print(f"run {i + 1}/{args.repeat}: {name} ({revs[name]}) ...", file=sys.stderr, flush=True)
            with checkout(revs[name], parent / "tree") as tree:
                runs[name].append(run_demo(tree, work, work.with_suffix(".log")))
            r = runs[name][-1]
            print(f"  {r['total_s']:.0f} s, peak RSS {r['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    best = {n: min(rs, key=lambda r: r["total_s"]) for n, rs in runs.items()}
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end; baseline "
          f"{args.baseline} ({revs['base']}), current {args.current} ({revs['new']})")
    print(table("base", best["base"], "new", best["new"]))
    same = results_key(best["base"]) == results_key(best["new"])
    print(f"results (dataset version, metrics to 4 decimals): {'identical' if same else 'DIFFERENT'}")
    if not same:
        print(json.dumps({n: results_key(best[n]) for n in best}, indent=1))
    if args.json:
        args.json.write_text(json.dumps({n: [{k: v for k, v in r.items() if k != "result"} | {
            "results": results_key(r)} for r in rs] for n, rs in runs.items()}, indent=1))


if __name__ == "__main__":
    main()
