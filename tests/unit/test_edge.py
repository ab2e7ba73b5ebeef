"""The embedded engine (qdrant-edge) behaves like Qdrant through qdrant_client's models: same hits and scores as
qdrant-client's local mode, filters, deletes, aliases, one process at a time, debris of a killed creation."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

pytest.importorskip("qdrant_edge")

DIM = 8


def _points(n: int = 60, seed: int = 0):
    from qdrant_client import models

    rng = np.random.default_rng(seed)
    pts = []
    for i in range(n):
        v = rng.standard_normal(DIM).astype(np.float32)
        terms = sorted(set(rng.integers(0, 40, size=6).tolist()))
        pts.append(models.PointStruct(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"p{i}")),
            vector={"dense": (v / np.linalg.norm(v)).tolist(),
                    # continuous weights: no ties, whose order neither engine promises
                    "sparse": models.SparseVector(indices=terms, values=rng.uniform(0.5, 3.0, len(terms)).tolist())},
            payload={"doc_id": f"d{i % 7}", "source_uri": f"file:///d{i % 7}", "chunk_index": i}))
    return pts


def _build(client, name: str = "docs__v1", pts=None):
    from qdrant_client import models

    client.create_collection(
        name, vectors_config={"dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE)},
        sparse_vectors_config={"sparse": models.SparseVectorParams(modifier=models.Modifier.IDF)})
    client.create_payload_index(name, "doc_id", field_schema=models.PayloadSchemaType.KEYWORD)
    client.upsert(name, points=pts or _points(), wait=True)


@pytest.fixture
def edge(tmp_path):
    from tasks.index.edge import EdgeClient

    client = EdgeClient(tmp_path / "edge")
    yield client
    client.close()


def _queries(client, collection, flt=None):
    from qdrant_client import models

    q = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)
    sparse = models.SparseVector(indices=[1, 5, 9], values=[1.0, 1.0, 1.0])
    out = {}
    out["dense"] = client.query_points(collection, query=q.tolist(), using="dense", limit=5, query_filter=flt).points
    out["sparse"] = client.query_points(collection, query=sparse, using="sparse", limit=5, query_filter=flt).points
    out["hybrid"] = client.query_points(
        collection, prefetch=[models.Prefetch(query=q.tolist(), using="dense", limit=20, filter=flt),
                              models.Prefetch(query=sparse, using="sparse", limit=20, filter=flt)],
        query=models.FusionQuery(fusion=models.Fusion.RRF), limit=5).points
    return out


def test_same_hits_and_scores_as_qdrant_client_local_mode(edge, tmp_path):
    from qdrant_client import QdrantClient, models

    local = QdrantClient(path=str(tmp_path / "local"))
    try:
        for c in (edge, local):
            _build(c)
        flt = models.Filter(must=[models.FieldCondition(key="doc_id", match=models.MatchAny(any=["d1", "d2"]))])
        for flt_ in (None, flt):
            a, b = _queries(edge, "docs__v1", flt_), _queries(local, "docs__v1", flt_)
            for mode in ("dense", "sparse"):  # IDF-weighted sparse scores agree with Qdrant's own formula
                assert [str(p.id) for p in a[mode]] == [str(p.id) for p in b[mode]], mode
                assert [p.score for p in a[mode]] == pytest.approx([p.score for p in b[mode]], rel=1e-4), mode
            # RRF gives equal scores to points of mirrored ranks: compare (score, id) pairs, not their order
            assert (sorted((round(p.score, 4), str(p.id)) for p in a["hybrid"])
                    == sorted((round(p.score, 4), str(p.id)) for p in b["hybrid"]))
            if flt_ is not None:
                assert all(p.payload["doc_id"] in ("d1", "d2") for m in a.values() for p in m)
    finally:
        local.close()


def test_count_retrieve_scroll_delete(edge):
    from qdrant_client import models

    pts = _points()
    _build(edge, pts=pts)
    assert edge.count("docs__v1", exact=True).count == 60
    got = edge.retrieve("docs__v1", ids=[pts[0].id, str(uuid.uuid4())], with_payload=False)
    assert [str(r.id) for r in got] == [pts[0].id]
    seen, offset = [], None
    while True:
        batch, offset = edge.scroll("docs__v1", limit=16, offset=offset, with_payload=True)
        seen += batch
        if offset is None:
            break
    assert len({str(r.id) for r in seen}) == 60 and all("doc_id" in r.payload for r in seen)
    edge.delete("docs__v1", points_selector=models.PointIdsList(points=[pts[0].id, pts[1].id]))
    assert edge.count("docs__v1").count == 58
    edge.delete("docs__v1", points_selector=models.Filter(
        must=[models.FieldCondition(key="doc_id", match=models.MatchValue(value="d3"))]))
    assert edge.count("docs__v1").count == 58 - sum(1 for p in pts[2:] if p.payload["doc_id"] == "d3")


def test_aliases_switch_atomically_and_survive_reopen(tmp_path):
    from qdrant_client import models

    from tasks.index.edge import EdgeClient
    from tasks.index.qdrant import alias_target, collections_of, switch_alias

    client = EdgeClient(tmp_path / "edge")
    _build(client, "docs__v1")
    _build(client, "docs__v2", _points(seed=1))
    assert collections_of(client, "docs") == ["docs__v1", "docs__v2"]
    assert switch_alias(client, "docs", "docs__v1") is None
    assert switch_alias(client, "docs", "docs__v2") == "docs__v1"
    assert client.count("docs").count == 60  # the alias resolves for every call, as on a server
    with pytest.raises(ValueError, match="not found"):
        client.update_collection_aliases(change_aliases_operations=[models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name="docs__v9", alias_name="docs"))])
    client.close()
    again = EdgeClient(tmp_path / "edge")
    try:
        assert alias_target(again, "docs") == "docs__v2"
        again.delete_collection("docs__v2")
        assert alias_target(again, "docs") is None and collections_of(again, "docs") == ["docs__v1"]
    finally:
        again.close()


def test_one_process_at_a_time_with_a_clear_error(tmp_path):
    from tasks.index.qdrant import QdrantBusyError, open_local

    first = open_local(tmp_path / "q", engine="edge")
    try:
        with pytest.raises(QdrantBusyError, match="one process at a time"):
            open_local(tmp_path / "q", engine="edge")
    finally:
        first.close()
    open_local(tmp_path / "q", engine="edge").close()  # released on close


def test_debris_of_an_unfinished_creation_is_not_a_collection(edge):
    (edge.root / "collections" / "docs__v1").mkdir()  # a process killed inside create_collection
    assert not edge.collection_exists("docs__v1") and edge.get_collections().collections == []
    _build(edge)
    assert edge.count("docs__v1").count == 60


def test_unsupported_filter_is_refused_not_ignored(edge):
    from qdrant_client import models

    _build(edge)
    flt = models.Filter(must=[models.FieldCondition(key="chunk_index", range=models.Range(gte=3))])
    with pytest.raises(NotImplementedError, match="not supported"):
        edge.count("docs__v1", count_filter=flt)


def test_hybrid_search_orders_rrf_ties_by_id_and_repeats_exactly(edge, monkeypatch):
    import tasks.index.search
    from tasks.index.config import IndexConfig
    from tasks.index.search import search_collection

    _build(edge)
    monkeypatch.setattr(tasks.index.search, "query_vector", lambda *a, **k: ([1, 5, 9], [1.0, 1.0, 1.0]))
    q = (np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)).tolist()
    runs = [[(h["score"], h["id"]) for h in search_collection(edge, "docs__v1", "q", IndexConfig(), 8, "hybrid",
                                                             dense_vector=q)] for _ in range(15)]
    assert all(r == runs[0] for r in runs) and len(runs[0]) == 8
    assert runs[0] == sorted(runs[0], key=lambda x: (-x[0], x[1]))  # mirrored RRF ranks tie: ordered by id
    assert len({s for s, _ in runs[0]}) < 8  # the query does produce ties
