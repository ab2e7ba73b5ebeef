"""chunk_records: citation fields, deterministic ids, and no chunk over the model limit with its title."""

from __future__ import annotations

import pytest

from tasks.core.records import sha256_text
from tasks.index.build import chunk_records, embed_input
from tasks.index.config import IndexConfig


@pytest.fixture(scope="module")
def counter():
    from tasks.index.chunk import TokenCounter
    from tasks.index.embed import resolve_model_path

    return TokenCounter.from_pretrained(resolve_model_path(""))


def rec(doc_id: str, title: str, text: str) -> dict:
    return {"doc_id": doc_id, "source_uri": f"file:///{doc_id}", "title": title, "text": text,
            "content_hash": sha256_text(text), "metadata": {"lang": "en"}}


def test_every_chunk_fits_with_its_title_and_cites_its_source(counter):
    body = "\n\n".join(f"## Part {i}\n\n" + "Relay keeps a local queue of events while offline. " * 12 for i in range(6))
    records = [rec("a.md", "Relay queue", "# Relay queue\n\n" + body), rec("b.md", "Very long title " * 120, body)]
    chunks = chunk_records(records, IndexConfig(chunk_size=128, chunk_overlap=16))
    long_title = [c for c in chunks if c["doc_id"] == "b.md"]
    assert long_title and all(c["title"].endswith("…") and counter.count(c["title"]) < 256 for c in long_title)
    big = chunk_records([records[0]], IndexConfig(chunk_size=254, chunk_overlap=16))
    assert all(counter.count(embed_input(c["title"], c["text"])) + 2 <= counter.max_length for c in big)
    assert {c["doc_id"] for c in chunks} == {"a.md", "b.md"}
    for c in chunks:
        assert counter.count(c["text"]) <= 128  # chunk_size counts the chunk text...
        assert counter.count(embed_input(c["title"], c["text"])) + counter.num_special <= counter.max_length  # ...and
        # the title that is embedded with it never pushes it past the model's limit (no silent truncation)
        assert c["text"] == next(r for r in records if r["doc_id"] == c["doc_id"])["text"][c["char_start"]:c["char_end"]]
        assert c["source_uri"].startswith("file:///") and c["metadata"] == {"lang": "en"}
    assert any(c["section"].endswith("Part 3") for c in chunks if c["doc_id"] == "a.md")
    again = chunk_records(records, IndexConfig(chunk_size=128, chunk_overlap=16))
    assert [c["id"] for c in again] == [c["id"] for c in chunks]  # same content, same point ids
    other = chunk_records(records, IndexConfig(chunk_size=96, chunk_overlap=16))
    assert not {c["id"] for c in other} & {c["id"] for c in chunks}  # another chunker config, other ids


def test_model_and_tokenizer_loads_from_parallel_threads_load_once():
    """The sweep builds settings in threads: loads must neither race in transformers' lazy imports nor load the
    same model twice."""
    from concurrent.futures import ThreadPoolExecutor

    from tasks.index import embed
    from tasks.index.chunk import TokenCounter

    embed._load_model.cache_clear()
    path = embed.resolve_model_path(embed.PACKAGED_MODEL)
    with ThreadPoolExecutor(4) as pool:
        models = list(pool.map(lambda _: embed.load_model(), range(4)))
        counters = list(pool.map(lambda _: TokenCounter.from_pretrained(path), range(4)))
    assert all(m is models[0] for m in models)
    assert embed._load_model.cache_info().misses == 1
    assert len({c.count("a sentence of seven tokens or so") for c in counters}) == 1
