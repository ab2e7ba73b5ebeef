"""index_flow on real Qdrant (local mode) and the packaged MiniLM: build, verify, serve, search, roll back."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.index.config import IndexConfig
from tasks.ingest.config import CollectConfig, IngestConfig
from tests.conftest import SAMPLE

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, prefect_harness):
    from flows.index import index_flow
    from flows.ingest import ingest_flow

    home = tmp_path_factory.mktemp("idx") / "ws"
    ingest_flow(IngestConfig(collect=CollectConfig(sources=[str(SAMPLE / "corpus")])), home=str(home))
    out = index_flow(IndexConfig(), home=str(home))
    return home, out


def _client(home: Path):
    from tasks.core.workspace import Workspace
    from tasks.index.qdrant import open_client

    return open_client(Workspace(home))


def test_build_verifies_and_serves(indexed):
    home, out = indexed
    assert out["created"] and out["points"] == out["chunks"] > 56
    assert out["check"]["self_hits"] == out["check"]["sampled"]
    client = _client(home)
    try:
        from tasks.index.qdrant import alias_target

        assert alias_target(client, "docs") == out["collection"]
    finally:
        client.close()


def test_search_modes_cite_sources_and_filter(indexed):
    from tasks.index.search import search_collection

    home, out = indexed
    client = _client(home)
    try:
        cfg = IndexConfig()
        for mode in ("dense", "sparse", "hybrid"):
            hits = search_collection(client, "docs", "How many days of annual leave do employees get?", cfg, 5, mode)
            assert hits and all(h["source_uri"].startswith("file://") and h["doc_id"] and h["title"] for h in hits)
            assert "handbook/leave-policy.md" in [h["doc_id"] for h in hits], mode
        korean = search_collection(client, "docs", "서울 사무소 회의실 예약", cfg, 3, "hybrid")
        assert korean[0]["doc_id"].startswith("seoul/")
        only = search_collection(client, "docs", "leave", cfg, 5, "hybrid", {"doc_id": "handbook/travel-policy.md"})
        assert only and {h["doc_id"] for h in only} == {"handbook/travel-policy.md"}
    finally:
        client.close()


def test_rebuild_is_a_no_op_and_rollback_restores_previous(indexed):
    from flows.index import index_flow
    from tasks.core.workspace import Workspace
    from tasks.index.build import rollback_index
    from tasks.index.qdrant import alias_target

    home, first = indexed
    again = index_flow(IndexConfig(), home=str(home))
    assert not again["created"] and again["collection"] == first["collection"]
    second = index_flow(IndexConfig(chunk_size=96, chunk_overlap=16), home=str(home))
    assert second["created"] and second["collection"] != first["collection"] and second["previous"] == first["collection"]
    client = _client(home)
    try:
        assert rollback_index(Workspace(home), client, "docs") == (second["collection"], first["collection"])
        assert alias_target(client, "docs") == first["collection"]
    finally:
        client.close()


def test_local_qdrant_held_by_another_client_is_a_clear_error(indexed):
    from tasks.core.workspace import Workspace
    from tasks.index.qdrant import QdrantBusyError, open_client

    home, _ = indexed
    holder = _client(home)
    try:
        with pytest.raises(QdrantBusyError, match="one process at a time"):
            open_client(Workspace(home))
    finally:
        holder.close()


def test_failed_build_leaves_the_served_index_alone(indexed, monkeypatch):
    """A build whose points do not all land (a crash mid-upsert) fails verification; the alias stays put."""
    import tasks.index.build as ix
    from flows.index import index_flow
    from tasks.index.qdrant import alias_target

    home, _ = indexed
    client = _client(home)
    try:
        served = alias_target(client, "docs")
    finally:
        client.close()
    real = ix.upsert_chunks

    def crash_before_the_last_points(client, collection, chunks, dense, sparse, progress=None):
        real(client, collection, chunks[:-3], dense[:-3], sparse[:-3], progress)

    monkeypatch.setattr(ix, "upsert_chunks", crash_before_the_last_points)
    with pytest.raises(ix.IndexVerificationError, match="points for"):
        index_flow(IndexConfig(chunk_size=80, chunk_overlap=8), home=str(home))
    client = _client(home)
    try:
        assert alias_target(client, "docs") == served
    finally:
        client.close()
    monkeypatch.setattr(ix, "upsert_chunks", real)
    rebuilt = index_flow(IndexConfig(chunk_size=80, chunk_overlap=8), home=str(home))  # the re-run starts over
    assert rebuilt["created"] and rebuilt["points"] == rebuilt["chunks"]
