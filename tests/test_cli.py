"""The command-line contract: --help everywhere and fast, one JSON object with --json, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import GOOD_TEXT, PROJECT_ROOT

COMMANDS = ["demo", "ingest", "index", "search", "eval-retrieval", "status"]


def run_cli(args: list[str], home: Path, prefect_home: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAGTUNE_HOME": str(home), "PREFECT_HOME": str(prefect_home)}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=PROJECT_ROOT)


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("prefect-home")


def test_help_everywhere_without_heavy_imports():
    code = (
        "import sys\nfrom flows.cli import main\n"
        f"for argv in [['--help']] + [[c, '--help'] for c in {COMMANDS!r}]:\n"
        "    try:\n        main(argv)\n    except SystemExit as e:\n        assert e.code == 0, argv\n"
        "heavy = [m for m in ('prefect', 'torch', 'great_expectations', 'datasets', 'pandas') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "--max-quarantine-fraction" in out.stdout and "RAGTUNE_HOME" in out.stdout


def test_bad_arguments_and_missing_source_fail_with_one_line(tmp_path, prefect_home):
    res = run_cli(["ingest", "--source", str(tmp_path / "nope"), "--json"], tmp_path / "ws", prefect_home)
    assert res.returncode == 1
    assert json.loads(res.stdout) == {"ok": False, "error": f"source not found: {tmp_path / 'nope'} (looked at {tmp_path / 'nope'})"}
    assert len(res.stderr.strip().splitlines()) == 1 and "source not found" in res.stderr
    res = run_cli(["ingest", "--max-quarantine-fraction", "2"], tmp_path / "ws", prefect_home)
    assert res.returncode == 1 and "max_quarantine_fraction" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run_cli(["ingest", "--source", "ftp://example.invalid/x"], tmp_path / "ws", prefect_home)
    assert res.returncode == 1 and "only http and https" in res.stderr


@pytest.mark.slow
def test_ingest_json_contract_and_quarantine_failure(tmp_path, prefect_home):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.md").write_text("# A\n\n" + GOOD_TEXT)
    (src / "b.jsonl").write_text('{"id": "x", "text": "' + GOOD_TEXT.replace("Relay", "Beacon") + '"}\n{broken\n')
    res = run_cli(["ingest", "--source", str(src), "--json", "--max-quarantine-fraction", "0.5"], tmp_path / "ws", prefect_home)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)  # exactly one JSON object on stdout
    c = out["counts"]
    assert c["seen"] == c["accepted"] + c["duplicate"] + c["filtered"] + c["quarantined"] == 3
    assert {"dataset_version", "counts", "manifest", "quarantine_dir", "data_docs"} <= set(out)
    assert Path(out["manifest"]).exists() and Path(out["quarantine_dir"]).is_dir()

    res = run_cli(["ingest", "--source", str(src), "--json", "--max-quarantine-fraction", "0.1"], tmp_path / "ws", prefect_home)
    assert res.returncode == 1 and not json.loads(res.stdout)["ok"]
    assert "above max_quarantine_fraction 0.1" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    status = json.loads(run_cli(["status", "--json"], tmp_path / "ws", prefect_home).stdout)
    assert status["dataset_version"] == out["dataset_version"]  # the failed run left latest alone


def test_hit_display_does_not_repeat_the_title():
    from flows.cli import where

    assert where({"title": "Leave policy", "section": "Leave policy > Annual leave"}) == "Leave policy > Annual leave"
    assert where({"title": "Leave policy", "section": "Leave policy"}) == "Leave policy"
    assert where({"title": "FAQ", "section": "Billing"}) == "FAQ > Billing"
