"""Idempotent bootstrap of a Prefect server for ragtune: the `cpu` and `gpu` process work pools (base job templates
from this folder), the `gpu` global concurrency limit (one slot per GPU), variables, and every deployment of
prefect.yaml. Each object is created or updated only when it differs from what the server holds, so running it
twice changes nothing.

    PREFECT_API_URL=http://127.0.0.1:4200/api python deployments/bootstrap.py [--config ragtune.yaml]
        [--gpu-slots N] [--home PATH] [--json]

`--config` holds stage configs (`ingest:`, `index:`, `train:`, `evaluate:`, `retrain:`, `sweep:`, `monitor:`) that
become the default parameters of the deployments whose flows take them: a YAML of only what differs from the
defaults.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
SPEC_VARIABLE = "ragtune_deployments_spec"
# flow parameter -> section of the config file that becomes its default
PARAMETER_SECTIONS = {
    "flows/refresh.py:refresh_flow": {"config": ["ingest", "index"]},
    "flows/pipeline.py:pipeline_flow": {"config": ["ingest", "index", "train", "evaluate"]},
    "flows/index.py:index_flow": {"config": "index"},
    "flows/train.py:train_flow": {"config": "train"},
    "flows/retrain.py:retrain_flow": {"policy": "retrain", "config": "train"},
    "flows/promote.py:promote_flow": {"config": "evaluate"},
    "flows/sweep.py:sweep_flow": {"config": "sweep"},
    "flows/monitor.py:monitor_flow": {"config": "monitor"},
    "flows/compare.py:compare_flow": {"config": "compare"},
}


def gpu_count() -> int:
    """NVIDIA GPUs visible to this machine (0 without nvidia-smi)."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def deployment_parameters(entrypoint: str, base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The deployment's parameters with the config file's sections merged in as defaults."""
    params = dict(base or {})
    for param, sections in PARAMETER_SECTIONS.get(entrypoint, {}).items():
        if isinstance(sections, str):
            value = overrides.get(sections)
        else:
            value = {s: overrides[s] for s in sections if s in overrides} or None
        if value:
            params[param] = {**value, **(params.get(param) or {})}
    return params


def render_spec(prefect_yaml: Path, overrides: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """prefect.yaml with `{{ $VAR }}` resolved from `env` and the config defaults merged into parameters."""
    text = prefect_yaml.read_text(encoding="utf-8")

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in env:
            raise KeyError(f"prefect.yaml needs the environment variable {name}")
        return env[name]

    spec = yaml.safe_load(re.sub(r"\{\{\s*\$(\w+)\s*\}\}", sub, text))
    for dep in spec["deployments"]:
        dep["parameters"] = deployment_parameters(dep["entrypoint"], dep.get("parameters") or {}, overrides)
    return spec


def ensure_pool(client: Any, name: str, template: dict[str, Any], description: str) -> str:
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template,
                                               description=description))
        return "created"
    if pool.base_job_template == template and (pool.description or "") == description:
        return "unchanged"
    client.update_work_pool(name, WorkPoolUpdate(base_job_template=template, description=description))
    return "updated"


def ensure_limit(client: Any, name: str, slots: int) -> str:
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    try:
        limit = client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots, active=True))
        return "created"
    if limit.limit == slots and limit.active:
        return "unchanged"
    client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=slots, active=True))
    return "updated"


def ensure_variable(client: Any, name: str, value: str) -> str:
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate

    var = client.read_variable_by_name(name)
    if var is None:
        client.create_variable(VariableCreate(name=name, value=value))
        return "created"
    if var.value == value:
        return "unchanged"
    client.update_variable(VariableUpdate(name=name, value=value))
    return "updated"


def missing_deployments(client: Any, spec: dict[str, Any]) -> list[str]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    names = [d["name"] for d in spec["deployments"]]
    found = {d.name for d in client.read_deployments(deployment_filter=DeploymentFilter(
        name=DeploymentFilterName(any_=names)))}
    return [n for n in names if n not in found]


def apply_deployments(spec: dict[str, Any], env: dict[str, str]) -> None:
    """`prefect deploy --all` on the rendered spec, from the project root (entrypoints are relative to it)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=PROJECT, prefix=".bootstrap-", delete=False) as fh:
        yaml.safe_dump(spec, fh, sort_keys=False)
        path = Path(fh.name)
    try:
        res = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all",
                              "--prefect-file", str(path)], cwd=PROJECT, env=env, capture_output=True, text=True,
                             timeout=900)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-12:]
            raise RuntimeError("prefect deploy failed:\n" + "\n".join(tail))
    finally:
        path.unlink(missing_ok=True)


def bootstrap(config: dict[str, Any] | None = None, gpu_slots: int | None = None, home: str | None = None,
              project_dir: Path = PROJECT) -> dict[str, Any]:
    """Bring the server to the desired state; returns what was created, updated or left unchanged."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise RuntimeError("set PREFECT_API_URL to the server to bootstrap (make server does)")
    env = {**os.environ, "RAGTUNE_PROJECT_DIR": str(project_dir),
           "RAGTUNE_HOME": str(Path(home or os.environ.get("RAGTUNE_HOME") or project_dir / ".ragtune").resolve())}
    slots = gpu_slots if gpu_slots is not None else max(gpu_count(), 1)
    spec = render_spec(project_dir / "prefect.yaml", config or {}, env)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    report: dict[str, Any] = {"api_url": PREFECT_API_URL.value(), "home": env["RAGTUNE_HOME"], "gpu_slots": slots}
    with get_client(sync_client=True) as client:
        for pool in ("cpu", "gpu"):
            tpl = json.loads((HERE / f"{pool}-pool.json").read_text(encoding="utf-8"))
            report[f"pool {pool}"] = ensure_pool(client, pool, tpl, tpl["variables"].get("description", ""))
        report["limit gpu"] = ensure_limit(client, "gpu", slots)
        report["variable ragtune_home"] = ensure_variable(client, "ragtune_home", env["RAGTUNE_HOME"])
        current = client.read_variable_by_name(SPEC_VARIABLE)
        missing = missing_deployments(client, spec)
        if current is not None and current.value == digest and not missing:
            report["deployments"] = "unchanged"
        else:
            apply_deployments(spec, env)
            report["deployments"] = "created" if missing == [d["name"] for d in spec["deployments"]] else "updated"
            ensure_variable(client, SPEC_VARIABLE, digest)
    report["deployment_names"] = [d["name"] for d in spec["deployments"]]
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="YAML with stage configs used as deployment defaults")
    ap.add_argument("--gpu-slots", type=int, help="slots of the gpu concurrency limit (default: GPUs found, at least 1)")
    ap.add_argument("--home", help="RAGTUNE_HOME of the workers (default: $RAGTUNE_HOME or ./.ragtune)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    config = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) if args.config else {}
    report = bootstrap(config or {}, args.gpu_slots, args.home)
    if args.json:
        print(json.dumps(report))
        return
    for key, value in report.items():
        if key != "deployment_names":
            print(f"{key:<24} {value}")


if __name__ == "__main__":
    main()
