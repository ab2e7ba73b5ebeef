"""A local production-like stack: `prefect server start`, the bootstrap, and process workers for the `cpu` pool
(and `gpu` when a GPU is present), in the background; `stop` ends exactly the processes `start` began.

    python deployments/stack.py start [--port 4200] [--home .ragtune] [--config ragtune.yaml] [--gpu-worker]
                                      [--db sqlite|postgres]
    python deployments/stack.py stop
    python deployments/stack.py status

State (process ids, logs, the server's PREFECT_HOME and database) lives in `.server/` at the project root. The
server's database is SQLite in PREFECT_HOME by default; `--db postgres` (`make server DB=postgres`) starts a
PostgreSQL of its own first (deployments/postgres.py: Debian's binaries, a cluster in `.server/pg`, loopback
only) and points PREFECT_API_DATABASE_CONNECTION_URL at it; `stop` stops it too, and its data stays for the next
start, like the SQLite file does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
DEFAULT_STATE = PROJECT / ".server"


def _alive(pid: int) -> bool:
    from tasks.core.workspace import pid_alive

    return pid_alive(pid)


def _spawn(args: list[str], env: dict[str, str], log: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT,
                                start_new_session=True)  # its own process group: stop kills exactly it
    return proc.pid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_of(rec: dict[str, Any]):
    """The PostgreSQL a stack record says its server runs on (None on SQLite)."""
    from deployments.postgres import LocalPostgres

    db = rec.get("db") or {}
    return LocalPostgres(Path(db["root"]), db["port"]) if db.get("kind") == "postgres" else None


def wait_healthy(api_url: str, timeout_s: float = 120.0, pid: int | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pid is not None and not _alive(pid):
            raise RuntimeError("the Prefect server exited while starting; see .server/server.log")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the Prefect server at {api_url} did not become healthy in {timeout_s:.0f} s")


def server_env(state: Path, port: int, base: dict[str, str] | None = None) -> dict[str, str]:
    api = f"http://127.0.0.1:{port}/api"
    env = {**(base or os.environ)}
    env.update({
        "PREFECT_HOME": str(state / "prefect"), "PREFECT_API_URL": api, "PREFECT_UI_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        # pick up new deployments, and poll for work, every few seconds (defaults: 60 s and 10 s)
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "10",
        "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "1"), "HF_DATASETS_OFFLINE": env.get("HF_DATASETS_OFFLINE", "1"),
    })
    return env


def start(port: int = 4200, home: str | None = None, config: str | None = None, gpu_worker: bool | None = None,
          state: Path = DEFAULT_STATE, gpu_slots: int | None = None, base_env: dict[str, str] | None = None,
          db: str = "sqlite") -> dict[str, Any]:
    """Start server (on SQLite, or on a PostgreSQL started first with `db="postgres"`), bootstrap and workers;
    returns the state record (also written to `state/stack.json`)."""
    from deployments.bootstrap import gpu_count

    state.mkdir(parents=True, exist_ok=True)
    record_path = state / "stack.json"
    if record_path.exists() and any(_alive(p) for p in _pids(json.loads(record_path.read_text()))):
        raise RuntimeError(f"a stack is already running ({record_path}); `make server-stop` first")
    env = server_env(state, port, base_env)
    home = str(Path(home or env.get("RAGTUNE_HOME") or PROJECT / ".ragtune").resolve())
    env["RAGTUNE_HOME"] = home
    if db not in ("sqlite", "postgres"):
        raise ValueError(f"db must be sqlite or postgres, not {db!r}")
    rec: dict[str, Any] = {"port": port, "api_url": env["PREFECT_API_URL"], "ui_url": f"http://127.0.0.1:{port}",
                           "home": home, "state": str(state), "workers": {}, "db": {"kind": db}}
    db_env = dict(env)  # the database URL (with its password) goes to the server process alone
    try:
        if db == "postgres":
            from deployments.postgres import LocalPostgres

            pg = LocalPostgres(state / "pg", free_port())
            rec["db"].update({"root": str(pg.root), "port": pg.port, "where": pg.describe()})
            record_path.write_text(json.dumps(rec, indent=2))  # so that stop() finds it if what follows fails
            db_env["PREFECT_API_DATABASE_CONNECTION_URL"] = pg.start()
        rec["server"] = _spawn([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                                str(port)], db_env, state / "server.log")
        record_path.write_text(json.dumps(rec, indent=2))
        wait_healthy(rec["api_url"], pid=rec["server"])
        args = [sys.executable, str(HERE / "bootstrap.py"), "--json", "--home", home]
        if config:
            args += ["--config", config]
        if gpu_slots is not None:
            args += ["--gpu-slots", str(gpu_slots)]
        res = subprocess.run(args, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            raise RuntimeError("bootstrap failed: " + (res.stderr or res.stdout).strip().splitlines()[-1])
        rec["bootstrap"] = json.loads(res.stdout.strip().splitlines()[-1])
        pools = ["cpu"] + (["gpu"] if (gpu_worker if gpu_worker is not None else gpu_count() > 0) else [])
        for pool in pools:
            rec["workers"][pool] = _spawn([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
                                           "--type", "process", "--name", f"ragtune-{pool}"], env,
                                          state / f"worker-{pool}.log")
        record_path.write_text(json.dumps(rec, indent=2))
    except BaseException:
        stop(state)
        raise
    return rec


def _pids(rec: dict[str, Any]) -> list[int]:
    return [p for p in [*rec.get("workers", {}).values(), rec.get("server")] if p]


def stop(state: Path = DEFAULT_STATE, timeout_s: float = 20.0) -> list[int]:
    """SIGTERM the process groups `start` began (workers first, then the server), SIGKILL what lingers; then stop
    the PostgreSQL it started, if any (its data stays)."""
    record_path = state / "stack.json"
    if not record_path.exists():
        return []
    rec = json.loads(record_path.read_text())
    stopped = []
    for pid in _pids(rec):
        if not _alive(pid):
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it when we are its parent (tests)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
        stopped.append(pid)
    pg = postgres_of(rec)
    if pg is not None:
        pg.stop()
    record_path.unlink(missing_ok=True)
    return stopped


def status(state: Path = DEFAULT_STATE) -> dict[str, Any]:
    record_path = state / "stack.json"
    if not record_path.exists():
        return {"running": False}
    rec = json.loads(record_path.read_text())
    pg = postgres_of(rec)
    return {**rec, "running": all(_alive(p) for p in _pids(rec)) and (pg is None or pg.running())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("start", help="start the server, bootstrap it, start workers")
    st.add_argument("--port", type=int, default=int(os.environ.get("RAGTUNE_SERVER_PORT", "4200")))
    st.add_argument("--home", help="RAGTUNE_HOME the workers use (default $RAGTUNE_HOME or ./.ragtune)")
    st.add_argument("--config", help="YAML of stage configs used as deployment defaults")
    st.add_argument("--gpu-worker", action="store_true", default=None, help="start a gpu-pool worker without a GPU")
    st.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite",
                    help="the server's database: SQLite in .server/ (default) or a local PostgreSQL started for it")
    sub.add_parser("stop", help="stop what start started")
    sub.add_parser("status", help="print the stack's state")
    args = ap.parse_args()
    sys.path.insert(0, str(PROJECT))
    if args.cmd == "start":
        rec = start(args.port, args.home, args.config, args.gpu_worker, db=args.db)
        print(f"Prefect UI:  {rec['ui_url']}")
        print(f"database:    {rec['db'].get('where') or 'SQLite in ' + str(Path(rec['state']) / 'prefect')}")
        print(f"API:         export PREFECT_API_URL={rec['api_url']}")
        print(f"workers:     {', '.join(rec['workers'])} (logs in {rec['state']})")
        print(f"workspace:   {rec['home']}")
        print("stop with:   make server-stop")
    elif args.cmd == "stop":
        pids = stop()
        print(f"stopped {len(pids)} process group(s)" if pids else "no stack was running")
    else:
        print(json.dumps(status(), indent=2))


if __name__ == "__main__":
    main()
