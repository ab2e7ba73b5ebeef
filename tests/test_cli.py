"""The command-line contract: --help everywhere and fast, one JSON object with --json, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import GOOD_TEXT, PROJECT_ROOT, patience

COMMANDS = ["demo", "ingest", "index", "search", "eval-retrieval", "train", "evaluate", "promote", "rollback", "models",
            "ask", "status", "fates", "watch", "sweep", "serve", "calibrate", "monitor", "feedback", "compare",
            "train-reranker", "keys"]


def run_cli(args: list[str], home: Path, prefect_home: Path, timeout: float = patience(60),
            ) -> subprocess.CompletedProcess:
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
    from flows.cli.render import where

    assert where({"title": "Leave policy", "section": "Leave policy > Annual leave"}) == "Leave policy > Annual leave"
    assert where({"title": "Leave policy", "section": "Leave policy"}) == "Leave policy"
    assert where({"title": "FAQ", "section": "Billing"}) == "FAQ > Billing"


@pytest.mark.slow
def test_index_and_search_json_contract(tmp_path, prefect_home):
    home = tmp_path / "ws"
    res = run_cli(["index", "--json"], home, prefect_home)
    assert res.returncode == 1 and "run `ragtune ingest` first" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run_cli(["search", "leave", "--json"], home, prefect_home)
    assert res.returncode == 1 and "run `ragtune index` first" in res.stderr

    src = tmp_path / "src"
    src.mkdir()
    for name in ("leave-policy.md", "remote-work.md"):
        (src / name).write_bytes((PROJECT_ROOT / "data" / "sample" / "corpus" / "handbook" / name).read_bytes())
    assert run_cli(["ingest", "--source", str(src), "--json"], home, prefect_home).returncode == 0
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "How many days of annual leave?", "doc_id": "leave-policy.md"}\n'
                  '{"question": "Can I work from home?", "doc_id": "remote-work.md"}\n')
    cfg = tmp_path / "index.yaml"
    cfg.write_text(f"index:\n  verify_queries: {qa}\n  verify_min_recall: 1.0\n")
    res = run_cli(["index", "--config", str(cfg), "--json"], home, prefect_home)
    assert res.returncode == 0, res.stderr
    built = json.loads(res.stdout)
    assert built["mode"] == "full" and built["points"] == built["chunks"] > 2
    assert built["check"] == {"points": built["points"], "kind": "labelled", "queries": 2, "recall": 1.0, "k": 10,
                              "min_recall": 1.0}
    res = run_cli(["index", "--incremental", "--json"], home, prefect_home)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["mode"] == "unchanged"

    res = run_cli(["search", "annual leave days", "-k", "3", "--filter", "doc_id=leave-policy.md", "--json"], home,
                  prefect_home)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["mode"] == "hybrid" and out["collection"] == built["collection"] and 0 < len(out["hits"]) <= 3
    assert all(h["doc_id"] == "leave-policy.md" and h["source_uri"].startswith("file://") and h["title"]
               and h["section"] is not None and isinstance(h["score"], float) for h in out["hits"])

    cfg.write_text("index:\n  chunk_sise: 100\n")
    res = run_cli(["index", "--config", str(cfg)], home, prefect_home)
    assert res.returncode == 1 and "chunk_sise" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run_cli(["search", "x", "--filter", "nokey"], home, prefect_home)
    assert res.returncode == 1 and "key=value" in res.stderr


def test_model_commands_fail_with_one_line_on_an_empty_workspace(tmp_path, prefect_home):
    home = tmp_path / "ws"
    res = run_cli(["models", "--json"], home, prefect_home)
    assert res.returncode == 0 and json.loads(res.stdout) == {"ok": True, "champion": None, "challenger": None,
                                                             "versions": []}
    res = run_cli(["rollback", "--json"], home, prefect_home)
    assert res.returncode == 1 and json.loads(res.stdout) == {"ok": False, "error": "no earlier champion to roll back to"}
    assert len(res.stderr.strip().splitlines()) == 1
    res = run_cli(["ask", "How many days of leave?", "--json"], home, prefect_home)
    assert res.returncode == 1 and "run `ragtune index` first" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run_cli(["evaluate", "--json"], home, prefect_home)
    assert res.returncode == 1 and "run `ragtune train` first" in json.loads(res.stdout)["error"]
    res = run_cli(["promote", "--max-examples", "0"], home, prefect_home)
    assert res.returncode == 1 and "max_examples" in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_dropped_content_is_said_loudly_listed_and_rescued(tmp_path, prefect_home):
    home = tmp_path / "ws"
    src = tmp_path / "kb"
    src.mkdir()
    (src / "todo.md").write_text("TODO")
    (src / "hours.txt").write_text("Office hours: 9-5")
    (src / "deck.key").write_bytes(b"keynote")
    res = run_cli(["ingest", "--source", str(src)], home, prefect_home)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[-3].startswith("WARNING: 2 of 3 inputs (67%) were filtered")
    assert "warning: 1 filtered as placeholder: " in res.stdout and "todo.md" in res.stdout
    assert "warning: 1 filtered as unsupported: " in res.stdout and "not read" in res.stdout

    out = json.loads(run_cli(["fates", "--fate", "filtered", "--json"], home, prefect_home).stdout)
    assert out["total"] == 3 and out["matched"] == 2
    assert {Path(f["unit"]).name: f["reason"].split(":")[0] for f in out["fates"]} == {"todo.md": "placeholder",
                                                                                     "deck.key": "unsupported"}
    res = run_cli(["fates", "--reason", "placeholder"], home, prefect_home)
    assert res.returncode == 0 and "todo.md" in res.stdout and "1 of 3 inputs match" in res.stdout
    assert "--keep" in res.stdout
    status = run_cli(["status"], home, prefect_home).stdout
    assert "filtered" in status and "placeholder" in status and "ragtune fates" in status

    res = run_cli(["ingest", "--source", str(src), "--keep", "todo.md", "--json"], home, prefect_home)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["counts"]["accepted"] == 2
    assert "warning: 1 filtered as unsupported" in res.stderr  # --json: stdout is the object, warnings on stderr
    kept = json.loads(run_cli(["fates", "--unit", "*todo.md", "--json"], home, prefect_home).stdout)["fates"]
    assert kept[0]["fate"] == "accepted" and kept[0]["reason"].startswith("kept: matches keep pattern 'todo.md'")
    res = run_cli(["fates", "--run", "no-such-run"], home, prefect_home)
    assert res.returncode == 1 and "no manifest for run no-such-run" in res.stderr
