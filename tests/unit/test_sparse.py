"""BM25 sparse vectors: analyzer, stable term ids, saturation and length normalisation."""

from __future__ import annotations

from tasks.index.sparse import SparseParams, analyze, document_vector, query_vector, term_index


def test_analyzer_stems_and_drops_stop_words():
    assert analyze("The proteins were studied in running mice") == ["protein", "were", "studi", "run", "mice"]
    assert analyze("서울 사무소 東京") == ["서울", "사무소", "東", "京"]
    assert analyze("The cats", SparseParams(stemmer="", stopwords=False)) == ["the", "cats"]


def test_term_ids_are_stable_and_31_bit():
    assert term_index("protein") == term_index("protein") != term_index("proteins")
    assert 0 <= term_index("x") < 2**31


def test_bm25_saturation_and_length_normalisation():
    p = SparseParams(k1=0.9, b=0.4)
    one = dict(zip(*document_vector(["a"], 1.0, p), strict=True))[term_index("a")]
    many = dict(zip(*document_vector(["a"] * 10, 10.0, p), strict=True))[term_index("a")]
    assert one < many < p.k1 + 1  # more occurrences count, with diminishing returns
    short = dict(zip(*document_vector(["a", "b"], 10.0, p), strict=True))[term_index("a")]
    long = dict(zip(*document_vector(["a"] + ["b"] * 30, 10.0, p), strict=True))[term_index("a")]
    assert short > long  # the same term counts more in a shorter document
    idx, vals = query_vector("protein proteins study")
    assert len(idx) == len(set(idx)) == 2 and vals == [1.0, 1.0]
