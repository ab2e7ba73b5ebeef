"""Child processes of bench/gpu_check.py: run one in its own process group under a time limit, read its result."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from bench.gpu import ROOT
from tasks.core.offline import SWITCHES

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               **SWITCHES,  # Hub kernels off, as tasks/core/offline.py sets them for ragtune's own processes
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "false",
               "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


class StepError(RuntimeError):
    """A child that failed, timed out or printed no result."""


@dataclass
class ChildResult:
    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool


# The child running now; run_child kills it on any exception, and main again in case a second signal cut that short.
_running: subprocess.Popen | None = None


def kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the child's process group, SIGKILL after 5 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(5)
            return
        except subprocess.TimeoutExpired:
            continue


def kill_running_child() -> None:
    """Kill the process group of the child running now, if there is one."""
    if _running is not None:
        kill_group(_running)


def run_child(cmd: list[str], timeout_s: float, env: dict[str, str]) -> ChildResult:
    """Run `cmd` in its own process group from the project root; the whole group is killed at the time limit."""
    global _running
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _running = proc
    try:
        out, err = proc.communicate(timeout=max(1.0, timeout_s))
        return ChildResult(proc.returncode, out, err, time.monotonic() - t0, False)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        try:  # a process that left the group could hold the pipes open: do not wait for it
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            out, err = "", ""
        return ChildResult(None, out, err, time.monotonic() - t0, True)
    finally:
        if proc.poll() is None:
            kill_group(proc)
        _running = None


def last_json_line(text: str) -> dict[str, Any] | None:
    """The last stdout line that is a JSON object (transformers prints python dicts on stdout too)."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def error_line(stderr: str) -> str:
    """The exception line of a traceback, else the last non-empty line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", ln):
            return ln[:300]
    return lines[-1][:300] if lines else "no output"


def child_json(res: ChildResult, what: str, timeout_s: float) -> dict[str, Any]:
    """The JSON object a child printed last; StepError when it timed out, failed or printed none."""
    if res.timed_out:
        raise StepError(f"{what} timed out after {timeout_s:.0f} s (killed); last line: {error_line(res.stderr)}")
    data = last_json_line(res.stdout)
    if res.rc != 0 or data is None:
        raise StepError(f"{what} exited {res.rc}: {error_line(res.stderr)}")
    return data


def child_env(base: dict[str, str], device_count: int) -> dict[str, str]:
    """Offline settings; one GPU only (the Trainer wraps a model in DataParallel when it sees several)."""
    env = {**base, **OFFLINE_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), base.get("PYTHONPATH", "")) if p)
    if device_count > 1:
        visible = [v.strip() for v in base.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        env["CUDA_VISIBLE_DEVICES"] = visible[0] if visible else "0"
    return env


def parse_pytest_counts(text: str) -> dict[str, Any]:
    """Counts from pytest's closing line (`2 passed, 1 failed, 30 deselected in 9.1s`) and the failed test ids."""
    counts = {k: 0 for k in ("passed", "failed", "errors", "skipped", "deselected", "xfailed", "xpassed")}
    closing = [ln for ln in text.splitlines() if re.search(r"\b(passed|failed|error|errors|deselected|skipped|"
                                                           r"no tests ran)\b.* in [\d.]+s", ln)]
    if closing:
        for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)", closing[-1]):
            counts["errors" if word.startswith("error") else word] = int(n)
    counts["failed_tests"] = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, flags=re.M)
    return counts
