"""Workspace helpers: atomic writes, pointers, the stage lock, provenance."""

from __future__ import annotations

import pytest

from tasks.core.provenance import provenance
from tasks.core.workspace import (
    Workspace,
    WorkspaceBusyError,
    atomic_write_text,
    new_run_id,
    publish_dir,
    read_pointer,
    write_pointer,
)


def test_home_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("RAGTUNE_HOME", str(tmp_path / "h"))
    assert Workspace.from_env().root == tmp_path / "h"
    assert Workspace.from_env(tmp_path / "x").root == tmp_path / "x"


def test_atomic_write_and_pointer(tmp_path):
    p = tmp_path / "a" / "latest"
    write_pointer(p, "abc")
    assert read_pointer(p) == "abc" and read_pointer(tmp_path / "none") is None
    atomic_write_text(p, "def\n")
    assert read_pointer(p) == "def" and oct(p.stat().st_mode & 0o777) != "0o600"
    assert not [x for x in p.parent.iterdir() if x.name.endswith(".tmp")]


def test_publish_dir_keeps_existing(tmp_path):
    (tmp_path / "s1").mkdir()
    (tmp_path / "s1" / "f").write_text("1")
    assert publish_dir(tmp_path / "s1", tmp_path / "final")
    (tmp_path / "s2").mkdir()
    (tmp_path / "s2" / "f").write_text("2")
    assert not publish_dir(tmp_path / "s2", tmp_path / "final")
    assert (tmp_path / "final" / "f").read_text() == "1" and not (tmp_path / "s2").exists()


def test_lock_is_exclusive(tmp_path):
    ws = Workspace(tmp_path)
    with ws.lock("ingest"), pytest.raises(WorkspaceBusyError, match="another ragtune ingest run"), ws.lock("ingest"):
        pass
    with ws.lock("ingest"):
        pass  # released after use


def test_run_ids_sort_by_time_and_provenance_names_packages():
    assert new_run_id() != new_run_id()
    prov = provenance()
    assert "prefect" in prov["packages"] and "python" in prov["packages"]
