"""Helpers for the integration tests: the sample subset the stack serves, and a retrying client for its REST API."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from deployments.stack import free_port
from tests.conftest import SAMPLE, patience

DOCS = ["handbook/leave-policy.md", "handbook/remote-work.md", "handbook/travel-policy.md", "handbook/welcome.md",
        "product/relay-agent.md"]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def qa_file(path: Path) -> Path:
    """Sample Q/A pairs about the copied documents (closed-book, short), enough for all three splits."""
    rows = [json.loads(line) for line in (SAMPLE / "qa.jsonl").read_text(encoding="utf-8").splitlines()]
    keep = [r for r in rows if r.get("doc_id") in DOCS][:40]
    path.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
    return path


def api(rec: dict[str, Any]) -> httpx.Client:
    """An HTTP client that retries what Prefect's own clients retry (503 when SQLite is busy, 429, timeouts): a
    loaded 2-core machine running the server, two workers and a training flow answers some requests late."""
    from prefect.client.base import PrefectHttpxSyncClient

    return PrefectHttpxSyncClient(base_url=rec["api_url"], timeout=60, raise_on_all_errors=False)


def deployment_id(client: httpx.Client, name: str) -> str:
    res = client.post("/deployments/filter", json={"deployments": {"name": {"any_": [name]}}})
    res.raise_for_status()
    return res.json()[0]["id"]


def runs_of(client: httpx.Client, name: str, states: list[str] | None = None) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"deployments": {"id": {"any_": [deployment_id(client, name)]}}, "sort": "START_TIME_ASC"}
    if states:
        body["flow_runs"] = {"state": {"type": {"any_": states}}}
    res = client.post("/flow_runs/filter", json=body)
    res.raise_for_status()
    return res.json()


def wait_for(predicate, timeout_s: float, what: str, interval: float = 1.0):
    """The predicate's first truthy value, polled every `interval` s; `timeout_s` is a deadline (give it as
    `patience(quiet seconds)`), and running out says what was awaited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def wait_run(client: httpx.Client, run_id: str, timeout_s: float = patience(150)) -> dict[str, Any]:
    def done():
        run = client.get(f"/flow_runs/{run_id}").json()
        return run if run["state_type"] in TERMINAL else None

    run = wait_for(done, timeout_s, f"flow run {run_id}", 2.0)
    assert run["state_type"] == "COMPLETED", f"{run['name']}: {run['state']['message']}"
    return run


def make_adapter(base_model_dir: str, folder, seed: int) -> str:
    """A LoRA adapter on the test base model, saved as safetensors (its B matrices are random, so it changes the
    answers): a stand-in for a trained champion where only loading and swapping are under test."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(str(folder), safe_serialization=True)
    return str(folder)


def register_champion(home, base_model_dir: str, run_id: str, seed: int) -> str:
    """Register an adapter as a training run and promote it; returns its registry version."""
    from pathlib import Path

    from tasks.core.workspace import Workspace
    from tasks.train import registry

    ws = Workspace(Path(home))
    adapter = make_adapter(base_model_dir, ws.models / run_id / "adapter", seed)
    rec = registry.register(ws, {"run_id": run_id, "adapter_dir": adapter, "base_model": base_model_dir},
                            as_challenger=False)
    registry.promote(ws, rec["version"], reason="test")
    return rec["version"]


def start_server(home, *args: str, timeout_s: float = patience(45)) -> tuple[Any, str]:
    """`ragtune serve` as a subprocess on a free port; returns (process, base URL) once /readyz says ready."""
    import os
    import subprocess
    import sys

    from tests.conftest import PROJECT_ROOT

    port = free_port()
    env = {**os.environ, "RAGTUNE_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    log = open(Path(home).parent / f"serve-{port}.log", "w")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--port", str(port), *args], cwd=PROJECT_ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ragtune serve exited with {proc.returncode}: "
                                 f"{Path(log.name).read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"ragtune serve not ready after {timeout_s:.0f} s: {Path(log.name).read_text()[-3000:]}")


def stop_server(proc: Any) -> None:
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=patience(10))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
