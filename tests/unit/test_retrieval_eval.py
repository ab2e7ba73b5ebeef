"""Retrieval metrics against known values, and eval on a tiny hand-made BEIR set with known answers."""

from __future__ import annotations

import json
import math

import pytest

from tasks.index.retrieval_eval import doc_run, load_qrels, score_runs


def test_metrics_known_values():
    qrels = {"q1": {"d1": 1}, "q2": {"d3": 1, "d4": 1}}
    runs = {"q1": {"d9": 3.0, "d1": 2.0}, "q2": {"d3": 5.0, "d4": 4.0}}
    m = score_runs(qrels, runs)
    assert m["queries"] == 2
    assert m["mrr@10"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1.0) / 2)
    assert m["recall@10"] == pytest.approx(1.0)


def test_unjudged_queries_are_not_scored_and_chunks_map_to_best_doc():
    m = score_runs({"q1": {"d1": 1}}, {"q1": {"d1": 1.0}, "q-unjudged": {"d2": 1.0}})
    assert m["queries"] == 1 and m["ndcg@10"] == 1.0
    assert doc_run([{"doc_id": "a", "score": 0.2}, {"doc_id": "a", "score": 0.9}, {"doc_id": "b", "score": 0.5}]) == \
        {"a": 0.9, "b": 0.5}


def test_qrels_header_and_separators(tmp_path):
    p = tmp_path / "q.tsv"
    p.write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n1 d2 0\n2\td3\t2\n")
    assert load_qrels(p) == {"1": {"d1": 1, "d2": 0}, "2": {"d3": 2}}


TINY = [
    ("d1", "Harbor connectors", "Harbor connectors sync data between Tidewright and external systems every fifteen minutes."),
    ("d2", "Beacon alerts", "Beacons raise alerts when a flow run fails three times in a row."),
    ("d3", "Moorings", "Moorings store secrets encrypted at rest with per-workspace keys."),
    ("d4", "Relay agent", "Relay is the on-premises agent that runs flows inside a private network."),
    ("d5", "Pricing", "The Cutter plan costs twenty-nine dollars per user per month."),
]
QUERIES = {"q1": "How often do Harbor connectors sync?", "q2": "Where are secrets stored?",
           "q3": "What does the Cutter plan cost?", "q4": "unjudged question about Relay"}
QRELS = {"q1": "d1", "q2": "d3", "q3": "d5"}


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "engine"), [("dense", "edge"), ("sparse", "edge"), ("hybrid", "edge"),
                                             ("hybrid", "local")])
def test_eval_on_tiny_beir_set(tmp_path, mode, engine):
    from tasks.index.config import IndexConfig
    from tasks.index.qdrant import open_local
    from tasks.index.retrieval_eval import evaluate_retrieval

    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in TINY))
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in QRELS.items()))
    client = open_local(tmp_path / "qdrant", engine=engine)
    try:
        res = evaluate_retrieval(client, tmp_path / "corpus.jsonl", tmp_path / "queries.jsonl", tmp_path / "qrels.tsv",
                                 [mode], IndexConfig())
    finally:
        client.close()
    m = res["modes"][mode]
    assert m["queries"] == 3 and res["documents"] == 5
    assert m["ndcg@10"] == pytest.approx(1.0) and m["mrr@10"] == pytest.approx(1.0)
