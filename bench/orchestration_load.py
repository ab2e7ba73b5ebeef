"""Orchestration under load: a local `prefect server` on SQLite and on PostgreSQL in the same run, each driven the
same way, at the same time, by
  - 8 REST clients that create 200 flow runs of a trivial deployment (Prefect's own retrying HTTP client, with a
    hook that sees every raw response, so 503s hidden by the retries are counted too);
  - 8 event clients (Prefect's websocket events client) that emit 500 `ragtune.corpus.changed` events for 10
    sources. Two automations react to them: one like `refresh-on-change` in prefect.yaml (a run per event, the
    event's id passed as a parameter) and one debounced per source (`for_each` resource, `within` 60 s: at most
    one run per source per window);
and then 8 clients that race, as workers do, to move scheduled runs of a deployment with `concurrency_limit: 1`
to PENDING, RUNNING and COMPLETED: the server must let exactly one through at a time (a refused run is
rescheduled by the server; the servers here reschedule it 2 s later instead of Prefect's default 30 s).

Reported per database: 503s seen by the raw client, failures after the client's retries, seconds until all 200
runs are scheduled, event emission errors, events that started no run (lost) or two (duplicated), seconds until
every event's run exists, event-to-run latency p50/p95 (run created - event occurred), debounced runs per source,
and the most runs of the limited deployment that were PENDING/RUNNING at once (from the server's state history).

Target on PostgreSQL: 0 failures after retries, 0 lost events, debounce and concurrency limits respected.

    python bench/orchestration_load.py [--databases sqlite,postgres] [--runs 200] [--events 500] [--clients 8]
                                       [--sources 10] [--debounce-s 60] [--race-runs 30] [--timeout-s 300] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EVENT = "ragtune.corpus.changed"
SLOT_WAIT_S = 2


def noop_flow(event_id: str | None = None, source: str | None = None) -> None:
    """The trivial flow the load deployments point at (its runs are orchestrated, never executed, here)."""


# -- pure parts (unit-tested) -------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals [start, end) open at one instant."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def debounce_bound(span_s: float, within_s: float) -> int:
    """The most runs a reactive trigger with threshold 1 and window `within_s` may start for one key when that
    key's events span `span_s` seconds: one at the first event, then at most one per later window."""
    return 1 + math.floor(span_s / within_s) if within_s > 0 else sys.maxsize


def event_accounting(emitted: dict[str, float], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Match the runs the per-event automation started with the events emitted (by the event id parameter):
    lost events, duplicated runs, and event-to-run latencies (run created - event occurred)."""
    seen: dict[str, int] = {}
    latencies = []
    for run in runs:
        eid = (run.get("parameters") or {}).get("event_id")
        if eid not in emitted:
            continue
        seen[eid] = seen.get(eid, 0) + 1
        if seen[eid] == 1:
            latencies.append(_ts(run["created"]) - emitted[eid])
    return {"lost": len(set(emitted) - set(seen)), "duplicated": sum(n - 1 for n in seen.values()),
            "latency_p50_s": _round(percentile(latencies, 50)), "latency_p95_s": _round(percentile(latencies, 95)),
            "latencies": latencies}


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _round(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def verdict(row: dict[str, Any]) -> list[str]:
    """What misses the target, in words (empty: on target)."""
    problems = []
    if row.get("failed_after_retries"):
        problems.append(f"{row['failed_after_retries']} request(s) failed after retries")
    if row.get("runs_scheduled", 0) < row.get("runs_requested", 0):
        problems.append(f"{row['runs_requested'] - row['runs_scheduled']} run(s) never scheduled")
    if row.get("event_errors"):
        problems.append(f"{row['event_errors']} event(s) could not be emitted")
    if row.get("events_lost"):
        problems.append(f"{row['events_lost']} event(s) had started no run {row.get('events_wait_s')} s after the "
                        "runs were in")
    if row.get("events_duplicated"):
        problems.append(f"{row['events_duplicated']} event(s) started more than one run")
    if not row.get("debounce_respected", True):
        problems.append("the debounced automation started more runs than its window allows (or none for a source)")
    if row.get("race_runs", 0) < row.get("race_of", 0):
        problems.append(f"only {row['race_runs']} of {row['race_of']} runs got through the concurrency limit in time")
    if (row.get("max_concurrent") or 0) > row.get("concurrency_limit", 1):
        problems.append(f"{row['max_concurrent']} runs of a deployment limited to {row['concurrency_limit']} "
                        "were active at once")
    return problems


def table(rows: list[dict[str, Any]]) -> str:
    cols = [("database", "database"), ("raw 503s", "raw_503"), ("failed after retries", "failed_after_retries"),
            ("runs scheduled", "runs_scheduled"), ("s to schedule runs", "runs_schedule_s"),
            ("event errors", "event_errors"), ("events lost", "events_lost"),
            ("duplicated", "events_duplicated"), ("s to all event runs", "event_runs_s"),
            ("event→run p50 s", "latency_p50_s"), ("p95 s", "latency_p95_s"),
            ("debounced runs/source", "debounced_runs_per_source"), ("raced runs", "race_runs"),
            ("max concurrent (limit 1)", "max_concurrent")]
    out = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if r.get("skipped"):
            out.append(f"| {r['database']} | skipped: {r['skipped']} |" + " |" * (len(cols) - 2))
            continue
        out.append("| " + " | ".join("" if r.get(k) is None else str(r.get(k)) for _, k in cols) + " |")
    return "\n".join(out)


# -- the server ---------------------------------------------------------------------------------------------------
class Server:
    """`prefect server start` on a free loopback port, with its own PREFECT_HOME, on SQLite or on a PostgreSQL
    started for it (deployments/postgres.py)."""

    def __init__(self, database: str, root: Path) -> None:
        from deployments.stack import free_port, server_env

        self.database, self.root = database, root
        self.port = free_port()
        self.env = server_env(root, self.port, {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")})
        self.api_url = self.env["PREFECT_API_URL"]
        # a run refused a deployment concurrency slot is rescheduled this much later (default 30 s): shorter here,
        # so that the race measures the limit and not the wait
        self.env["PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS"] = str(SLOT_WAIT_S)
        self.pg = None
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        from deployments.stack import free_port, wait_healthy

        env = dict(self.env)
        if self.database == "postgres":
            from deployments.postgres import LocalPostgres

            self.pg = LocalPostgres(self.root / "pg", free_port())
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.pg.start()
        self.log = open(self.root / "server.log", "wb")  # noqa: SIM115 (closed in __exit__)
        self.proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                      "--port", str(self.port)], env=env, cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_healthy(self.api_url, timeout_s=180, pid=self.proc.pid)
        return self

    def __exit__(self, *exc: Any) -> None:
        import signal

        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        if self.pg is not None:
            self.pg.destroy()


# -- the load -----------------------------------------------------------------------------------------------------
class Counter:
    """Raw responses by status (every attempt, before retries), through an httpx response hook."""

    def __init__(self) -> None:
        self.status: dict[int, int] = {}

    async def hook(self, response: Any) -> None:
        self.status[response.status_code] = self.status.get(response.status_code, 0) + 1


def client(api_url: str, counter: Counter | None = None):
    """Prefect's own HTTP client (it retries 429, 502, 503 and timeouts with backoff, as flows and workers do)."""
    from prefect.client.base import PrefectHttpxAsyncClient

    hooks = {"response": [counter.hook]} if counter else {}
    return PrefectHttpxAsyncClient(base_url=api_url, timeout=60, event_hooks=hooks, raise_on_all_errors=False)


async def setup(api_url: str, sources: int, debounce_s: float) -> dict[str, str]:
    """The flow, three deployments and the two automations; returns the deployment ids."""
    async with client(api_url) as c:
        flow_id = (await c.post("/flows/", json={"name": "load-noop"})).json()["id"]
        ids = {}
        for name in ("load-runs", "load-refresh", "load-debounced"):
            res = await c.post("/deployments/", json={
                "name": name, "flow_id": flow_id, "entrypoint": "bench/orchestration_load.py:noop_flow",
                "concurrency_limit": 1, "enforce_parameter_schema": False, "parameters": {}})
            res.raise_for_status()
            ids[name] = res.json()["id"]

        def automation(name: str, deployment: str, trigger: dict[str, Any]) -> dict[str, Any]:
            params = {"event_id": {"__prefect_kind": "jinja", "template": "{{ event.id }}"},
                      "source": {"__prefect_kind": "jinja", "template": "{{ event.resource.id }}"}}
            return {"name": name, "enabled": True,
                    "trigger": {"type": "event", "match": {"prefect.resource.id": "ragtune.corpus.*"},
                                "expect": [EVENT], "posture": "Reactive", "threshold": 1, **trigger},
                    "actions": [{"type": "run-deployment", "source": "selected", "deployment_id": ids[deployment],
                                 "parameters": params}]}

        for body in (automation("load-every-event", "load-refresh", {"within": 0, "for_each": []}),
                     automation("load-debounced", "load-debounced",
                                {"within": debounce_s, "for_each": ["prefect.resource.id"]})):
            (await c.post("/automations/", json=body)).raise_for_status()
    await asyncio.sleep(5)  # the triggers service loads new automations on its next refresh
    return ids


async def count_runs(c: Any, deployment_id: str, states: list[str] | None = None) -> int:
    body: dict[str, Any] = {"deployments": {"id": {"any_": [deployment_id]}}}
    if states:
        body["flow_runs"] = {"state": {"type": {"any_": states}}}
    res = await c.post("/flow_runs/count", json=body)
    return int(res.json()) if res.status_code == 200 else -1


async def read_runs(c: Any, deployment_id: str) -> list[dict[str, Any]]:
    out, offset = [], 0
    while True:
        res = await c.post("/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment_id]}},
                                                      "limit": 200, "offset": offset, "sort": "EXPECTED_START_TIME_ASC"})
        res.raise_for_status()
        batch = res.json()
        out += batch
        if len(batch) < 200:
            return out
        offset += 200


async def create_runs(api_url: str, deployment_id: str, n: int, clients: int, counter: Counter) -> dict[str, Any]:
    failures: list[str] = []

    async def one_client(k: int) -> None:
        async with client(api_url, counter) as c:
            for i in range(k, n, clients):
                try:
                    res = await c.post(f"/deployments/{deployment_id}/create_flow_run",
                                       json={"idempotency_key": f"load-{i}", "parameters": {}})
                    if res.status_code not in (200, 201):
                        failures.append(f"{res.status_code}: {res.text[:120]}")
                except Exception as exc:  # noqa: BLE001 (a failure after retries is a measurement)
                    failures.append(f"{type(exc).__name__}: {exc}"[:160])

    t0 = time.monotonic()
    await asyncio.gather(*(one_client(k) for k in range(clients)))
    posted_s = time.monotonic() - t0
    async with client(api_url) as c:
        while (scheduled := await count_runs(c, deployment_id, ["SCHEDULED"])) < n - len(failures):
            if time.monotonic() - t0 > 120:
                break
            await asyncio.sleep(0.2)
    return {"runs_requested": n, "runs_scheduled": scheduled, "failed_after_retries": len(failures),
            "failures": failures[:5], "runs_posted_s": round(posted_s, 2),
            "runs_schedule_s": round(time.monotonic() - t0, 2)}


async def emit_events(api_url: str, n: int, clients: int, sources: int) -> dict[str, Any]:
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient

    emitted: dict[str, float] = {}
    by_source: dict[str, list[float]] = {}
    errors: list[str] = []

    async def one_client(k: int) -> None:
        async with PrefectEventsClient(api_url=api_url) as events:
            for i in range(k, n, clients):
                source = f"ragtune.corpus.load-source-{i % sources}"
                event = Event(event=EVENT, resource={"prefect.resource.id": source},
                              payload={"paths": [f"doc-{i}.md"], "source": source}, id=uuid.uuid4())
                try:
                    await events.emit(event)
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"{type(exc).__name__}: {exc}"[:160])
                    continue
                emitted[str(event.id)] = event.occurred.timestamp()
                by_source.setdefault(source, []).append(event.occurred.timestamp())
                await asyncio.sleep(0)

    t0 = time.monotonic()
    await asyncio.gather(*(one_client(k) for k in range(clients)))
    return {"emitted": emitted, "by_source": by_source, "event_errors": len(errors), "event_error_samples": errors[:5],
            "events_emit_s": round(time.monotonic() - t0, 2), "t0": time.time() - (time.monotonic() - t0)}


async def wait_event_runs(api_url: str, ids: dict[str, str], events: dict[str, Any], sources: int,
                          debounce_s: float, timeout_s: float) -> dict[str, Any]:
    expected = len(events["emitted"])
    async with client(api_url) as c:
        deadline = time.monotonic() + timeout_s
        while await count_runs(c, ids["load-refresh"]) < expected and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
        await asyncio.sleep(3)  # a duplicated run would show up now
        runs = await read_runs(c, ids["load-refresh"])
        debounced = await read_runs(c, ids["load-debounced"])
    acc = event_accounting(events["emitted"], runs)
    created = [_ts(r["created"]) for r in runs]
    per_source: dict[str, int] = {}
    for r in debounced:
        per_source[(r.get("parameters") or {}).get("source")] = per_source.get(
            (r.get("parameters") or {}).get("source"), 0) + 1
    respected = True
    for source, times in events["by_source"].items():
        bound = debounce_bound(max(times) - min(times), debounce_s)
        if not 1 <= per_source.get(source, 0) <= bound:
            respected = False
    return {"events_emitted": expected, "events_wait_s": timeout_s, "events_lost": acc["lost"], "events_duplicated": acc["duplicated"],
            "event_runs_s": round(max(created) - events["t0"], 2) if created else None,
            "latency_p50_s": acc["latency_p50_s"], "latency_p95_s": acc["latency_p95_s"],
            "debounced_runs_per_source": f"{min(per_source.values(), default=0)}-{max(per_source.values(), default=0)}"
            f" (of {len(events['by_source'])} sources)", "debounce_respected": respected}


async def race(api_url: str, deployment_id: str, n: int, clients: int, timeout_s: float) -> dict[str, Any]:
    """Clients race to start scheduled runs of the limited deployment; each run they get through goes RUNNING and
    COMPLETED. A run surely holds the slot from the moment its PENDING was accepted (the answer has arrived) until
    its COMPLETED is sent: those intervals, on this process's clock, must never overlap. (The server's state
    timestamps are not used: a state is stamped when its request arrives, before it waits for the database, so on
    a busy SQLite a run's PENDING can carry a time before the previous run's COMPLETED although it was accepted
    after.) A transition the server fails to record is retried, and counted."""
    async with client(api_url) as c:
        queue = [r["id"] for r in await read_runs(c, deployment_id)][:n]
    pending = list(queue)
    stats = {"waits": 0, "errors": 0}
    answers: dict[str, int] = {}  # every answer to a proposed state, by transition and status
    done: list[str] = []
    intervals: list[tuple[float, float]] = []
    deadline = time.monotonic() + timeout_s

    not_before: dict[str, float] = {}  # a run the server rescheduled (AwaitingConcurrencySlot) waits for its time

    async def propose(c: Any, run_id: str, state: str) -> tuple[str, dict[str, Any]]:
        try:
            res = await c.post(f"/flow_runs/{run_id}/set_state", json={"state": {"type": state}, "force": False})
        except Exception:  # noqa: BLE001 (failed after the client's retries)
            status, body = "ERROR", {}
        else:
            body = res.json() if res.status_code in (200, 201) else {}
            status = body.get("status", "ERROR")
        key = f"{state} {status}"
        answers[key] = answers.get(key, 0) + 1
        return status, body

    async def until_accepted(c: Any, run_id: str, state: str) -> bool:
        """As a worker does: a WAIT is waited out (its delay), an error retried with backoff."""
        attempt = 0
        while time.monotonic() < deadline:
            status, body = await propose(c, run_id, state)
            if status == "ACCEPT":
                return True
            if status == "WAIT":
                await asyncio.sleep(min(float((body.get("details") or {}).get("delay_seconds") or 1), 30))
                continue
            stats["errors"] += status == "ERROR"
            attempt += 1
            if status != "ERROR" or attempt > 20:
                return False
            await asyncio.sleep(0.1 * attempt)
        return False

    def next_run() -> str | None:
        now = time.time()
        for i, run_id in enumerate(pending):
            if not_before.get(run_id, 0) <= now:
                return pending.pop(i)
        return None

    async def worker() -> None:
        async with client(api_url) as c:
            while pending and time.monotonic() < deadline:
                run_id = next_run()
                if run_id is None:  # every run left waits for its new scheduled time
                    await asyncio.sleep(0.2)
                    continue
                status, body = await propose(c, run_id, "PENDING")
                if status != "ACCEPT":  # the slot is taken: the server rescheduled the run (or asked to wait)
                    stats["waits"] += status in ("WAIT", "REJECT")
                    stats["errors"] += status == "ERROR"
                    scheduled = ((body.get("state") or {}).get("state_details") or {}).get("scheduled_time")
                    not_before[run_id] = _ts(scheduled) if scheduled else time.time() + 0.5
                    pending.append(run_id)
                    await asyncio.sleep(0.05)
                    continue
                accepted = time.monotonic()
                if not await until_accepted(c, run_id, "RUNNING"):
                    continue
                await asyncio.sleep(0.05)
                released = time.monotonic()
                if await until_accepted(c, run_id, "COMPLETED"):
                    intervals.append((accepted, released))
                    done.append(run_id)

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return {"race_runs": len(done), "race_of": len(queue), "race_waits": stats["waits"],
            "race_errors": stats["errors"], "race_answers": answers, "race_s": round(time.monotonic() - t0, 2),
            "concurrency_limit": 1,
            "max_concurrent": max_overlap(intervals) if intervals else None}


async def load(api_url: str, args: argparse.Namespace) -> dict[str, Any]:
    ids = await setup(api_url, args.sources, args.debounce_s)
    counter = Counter()
    runs, events = await asyncio.gather(create_runs(api_url, ids["load-runs"], args.runs, args.clients, counter),
                                        emit_events(api_url, args.events, args.clients, args.sources))
    row = {**runs, **{k: v for k, v in events.items() if k not in ("emitted", "by_source", "t0")}}
    print(f"  {runs['runs_scheduled']} runs scheduled in {runs['runs_schedule_s']} s; waiting for the events' runs",
          file=sys.stderr, flush=True)
    row.update(await wait_event_runs(api_url, ids, events, args.sources, args.debounce_s, args.timeout_s))
    row["raw_503"] = counter.status.get(503, 0)
    row["raw_status"] = {str(k): v for k, v in sorted(counter.status.items())}
    print(f"  runs and events in; racing {args.race_runs} runs through the concurrency limit", file=sys.stderr,
          flush=True)
    row.update(await race(api_url, ids["load-runs"], args.race_runs, args.clients, args.timeout_s))
    return row


def measure(database: str, args: argparse.Namespace) -> dict[str, Any]:
    if database == "postgres":
        from deployments import postgres

        if not postgres.available():
            return {"database": database, "skipped": postgres.INSTALL_HINT}
    root = Path(tempfile.mkdtemp(prefix=f"ragtune-load-{database}-"))
    try:
        t0 = time.monotonic()
        with Server(database, root) as server:
            startup = time.monotonic() - t0
            row = {"database": database, "server_startup_s": round(startup, 1), **asyncio.run(load(server.api_url,
                                                                                                   args))}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    row["problems"] = verdict(row)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--databases", default="sqlite,postgres")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--events", type=int, default=500)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--sources", type=int, default=10)
    ap.add_argument("--debounce-s", type=float, default=60.0)
    ap.add_argument("--race-runs", type=int, default=30)
    ap.add_argument("--timeout-s", type=float, default=300.0, help="how long to wait for the events' runs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    bad = [d for d in databases if d not in ("sqlite", "postgres")]
    if bad or min(args.runs, args.events, args.clients, args.sources, args.race_runs) < 1:
        ap.error(f"databases are sqlite and postgres (not {bad}); counts must be >= 1")
    args.race_runs = min(args.race_runs, args.runs)
    rows = []
    for database in databases:
        print(f"{database}: server up, {args.runs} runs and {args.events} events from {args.clients}+{args.clients} "
              "clients ...", file=sys.stderr, flush=True)
        rows.append(measure(database, args))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "failures"}), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(table(rows))
    for r in rows:
        if not r.get("skipped"):
            print(f"{r['database']}: " + ("on target" if not r["problems"] else "; ".join(r["problems"])))
    pg = next((r for r in rows if r["database"] == "postgres" and not r.get("skipped")), None)
    if pg is not None:
        print("target on PostgreSQL (0 failures after retries, 0 lost events, limits respected): "
              + ("met" if not pg["problems"] else "missed"))


if __name__ == "__main__":
    main()
