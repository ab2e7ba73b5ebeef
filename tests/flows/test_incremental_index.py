"""Incremental indexing on real Qdrant (local mode): add, change and delete documents in place; a no-op run
loads no model; a failed check or a crash half way leaves a collection that the next run completes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tasks.index.config import IndexConfig
from tasks.ingest.config import CollectConfig, IngestConfig
from tests.conftest import SAMPLE

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

DOCS = ["handbook/leave-policy.md", "handbook/remote-work.md", "handbook/onboarding.md", "product/overview.md",
        "product/relay-agent.md", "support/troubleshooting-relay.md", "seoul/faq-ko.md"]
NEW_DOC = "# Parking at the Lisbon office\n\n" + (
    "Staff at the Lisbon office park in the underground garage on Rua da Prata. Bays on level -2 are reserved "
    "for car pools and charging; a visitor pass comes from reception. ") * 3


def _ingest(src: Path, home: Path) -> dict:
    from flows.ingest import ingest_flow

    return ingest_flow(IngestConfig(collect=CollectConfig(sources=[str(src)])), home=str(home))


def _points(home: Path, collection: str) -> dict[str, dict]:
    """Point id -> payload for every point of a collection."""
    from tasks.core.workspace import Workspace
    from tasks.index.qdrant import open_client

    client = open_client(Workspace(home))
    try:
        out, offset = {}, None
        while True:
            pts, offset = client.scroll(collection, limit=256, offset=offset, with_payload=True)
            out.update({str(p.id): p.payload for p in pts})
            if offset is None:
                return out
    finally:
        client.close()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for d in DOCS:
        (src / d).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE / "corpus" / d, src / d)
    return src


def _edit(src: Path) -> None:
    """One new, one changed and one deleted document."""
    (src / "handbook" / "parking.md").write_text(NEW_DOC, encoding="utf-8")
    leave = src / "handbook" / "leave-policy.md"
    leave.write_text(leave.read_text(encoding="utf-8").replace("28 days", "30 days") + "\n\nUpdated in November.\n",
                     encoding="utf-8")
    (src / "product" / "relay-agent.md").unlink()


def test_incremental_add_change_delete_equals_a_full_build(corpus, tmp_path, monkeypatch):
    from flows.index import index_flow
    from tasks.core.workspace import Workspace
    from tasks.index.qdrant import alias_target, open_client

    home = tmp_path / "ws"
    _ingest(corpus, home)
    first = index_flow(IndexConfig(), home=str(home))
    before = _points(home, first["collection"])

    import tasks.index.embed

    def no_model(*a, **k):
        raise AssertionError("a no-op incremental run must not load the embedding model")

    monkeypatch.setattr(tasks.index.embed, "load_model", no_model)
    noop = index_flow(IndexConfig(), home=str(home), incremental=True)
    assert noop["mode"] == "unchanged" and noop["collection"] == first["collection"] and not noop["created"]
    monkeypatch.undo()

    _edit(corpus)
    second = _ingest(corpus, home)
    inc = index_flow(IndexConfig(), home=str(home), incremental=True)
    assert inc["mode"] == "incremental" and inc["collection"] == first["collection"]  # updated in place
    assert inc["dataset_version"] == second["dataset_version"] and inc["index_version"] != first["index_version"]
    ch = inc["changes"]
    assert (ch["added"], ch["changed"], ch["removed"]) == (1, 1, 1)
    after = _points(home, inc["collection"])
    assert len(after) == inc["points"] == inc["chunks"]
    embedded_docs = {p["doc_id"] for pid, p in after.items() if pid not in before}
    assert embedded_docs == {"handbook/parking.md", "handbook/leave-policy.md"}
    assert ch["chunks_embedded"] == sum(p["doc_id"] in embedded_docs for p in after.values())
    untouched = {pid: p for pid, p in before.items() if p["doc_id"] not in {"handbook/leave-policy.md",
                                                                             "product/relay-agent.md"}}
    assert all(after[pid] == p for pid, p in untouched.items())  # the rest is left as it was
    assert not any(p["doc_id"] == "product/relay-agent.md" for p in after.values())
    assert not any("28 days" in p["text"] for p in after.values())  # no stale chunk of the old text

    # the same dataset version built from scratch under another alias gives exactly the same points
    full = index_flow(IndexConfig(name="full"), home=str(home))
    assert full["dataset_version"] == inc["dataset_version"]
    rebuilt = _points(home, full["collection"])
    assert rebuilt.keys() == after.keys()
    assert all(rebuilt[pid] == after[pid] for pid in after)

    # and a full `index` run for the alias now finds its collection already current
    again = index_flow(IndexConfig(), home=str(home))
    assert again["mode"] == "unchanged" and again["collection"] == first["collection"]
    client = open_client(Workspace(home))
    try:
        assert alias_target(client, "docs") == first["collection"]
    finally:
        client.close()


def test_failed_check_during_an_update_restores_the_collection(corpus, tmp_path, monkeypatch):
    import tasks.index.build as ix
    from flows.index import index_flow
    from tasks.core.workspace import read_json

    home = tmp_path / "ws"
    _ingest(corpus, home)
    first = index_flow(IndexConfig(), home=str(home))
    before = _points(home, first["collection"])
    meta_path = home / "indexes" / "docs" / f"{first['index_version']}.json"
    meta_before = read_json(meta_path)
    _edit(corpus)
    _ingest(corpus, home)

    def failing_check(*a, **k):
        raise ix.IndexVerificationError("retrieval check failed (simulated)")

    monkeypatch.setattr(ix, "check_retrieval", failing_check)
    with pytest.raises(ix.IndexVerificationError, match="simulated"):
        index_flow(IndexConfig(), home=str(home), incremental=True)
    assert _points(home, first["collection"]) == before
    assert read_json(meta_path) == meta_before


def test_update_killed_before_its_deletes_is_completed_by_the_next_run(corpus, tmp_path, monkeypatch):
    """The process dies after upserting the new points and before deleting the stale ones: every document
    stays searchable meanwhile, and the next incremental run ends where an uninterrupted one would."""
    import tasks.index.build as ix
    from flows.index import index_flow
    from tasks.core.workspace import Workspace
    from tasks.index.qdrant import open_client

    home = tmp_path / "ws"
    _ingest(corpus, home)
    first = index_flow(IndexConfig(), home=str(home))
    _edit(corpus)
    _ingest(corpus, home)

    class Killed(BaseException):
        pass

    def die(*a, **k):
        raise Killed

    monkeypatch.setattr(ix, "_doc_filter", die)
    client = open_client(Workspace(home))
    try:
        with pytest.raises(Killed):
            ix.update_index(Workspace(home), IndexConfig(), client)
    finally:
        client.close()
    monkeypatch.undo()
    half = _points(home, first["collection"])
    assert {p["doc_id"] for p in half.values()} >= {"handbook/parking.md", "product/relay-agent.md"}

    done = index_flow(IndexConfig(), home=str(home), incremental=True)
    assert done["mode"] == "incremental" and done["changes"]["removed"] == 1
    final = _points(home, first["collection"])
    full = index_flow(IndexConfig(name="full"), home=str(home))
    assert _points(home, full["collection"]).keys() == final.keys()
