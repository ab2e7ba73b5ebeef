"""MinHash signatures and near-duplicate detection, and the dedup decisions of the clean stage."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tasks.core.records import read_fates, read_records, write_records
from tasks.ingest.clean import clean_records
from tasks.ingest.config import CleanConfig
from tasks.ingest.dedup import NearDuplicateIndex, signature, tokens

RNG = random.Random()
WORDS = [f"w{i}" for i in range(3000)]


@pytest.fixture(autouse=True)
def _seeded():
    """The same texts for a test whichever tests ran before it."""
    RNG.seed(7)


def doc(n: int = 300) -> str:
    return " ".join(RNG.choices(WORDS, k=n))


def edit(text: str, k: int) -> str:
    w = text.split()
    for i in RNG.sample(range(len(w)), k):
        w[i] = "changed"
    return " ".join(w)


def test_tokens_split_cjk_per_character_and_keep_korean_words():
    assert tokens("東京オフィス") == ["東", "京", "オ", "フ", "ィ", "ス"]
    assert tokens("서울 사무소, Seoul!") == ["서울", "사무소", "seoul"]


def test_permutations_match_datasketch():
    from datasketch import MinHash

    from tasks.ingest.dedup import SCHEME, permutations

    assert np.array_equal(permutations(128, 1), MinHash(num_perm=128, seed=1, scheme=SCHEME).permutations)


def test_signature_is_deterministic_and_estimates_jaccard():
    a = doc()
    assert np.array_equal(signature(a), signature(a))
    near, far = edit(a, 3), doc()
    assert np.mean(signature(a) == signature(near)) > 0.8
    assert np.mean(signature(a) == signature(far)) < 0.1


def test_index_keeps_first_and_reports_best_match():
    idx = NearDuplicateIndex(threshold=0.8)
    a, b = doc(), doc()
    assert idx.check_and_add("a", signature(a)) is None
    assert idx.check_and_add("b", signature(b)) is None
    match = idx.check_and_add("a2", signature(edit(a, 2)))
    assert match is not None and match[0] == "a" and match[1] >= 0.8
    assert idx.check_and_add("c", signature(edit(a, 120))) is None  # heavily edited: a new document


def test_index_finds_nearly_every_pair_just_above_the_threshold():
    """Jaccard about 0.9 (3 words of 300 changed, 5-token shingles) against a 0.8 threshold: LSH must not lose
    these pairs (datasketch's default banding for 0.8 misses about 7% of them)."""
    missed = 0
    for _ in range(200):
        idx = NearDuplicateIndex(threshold=0.8)
        a = doc()
        idx.check_and_add("a", signature(a))
        missed += idx.check_and_add("b", signature(edit(a, 3))) is None
    assert missed <= 2


def _rec(unit: str, text: str) -> dict:
    return {"doc_id": unit, "unit": unit, "source_uri": f"file:///{unit}", "title": unit, "text": text,
            "metadata": {}, "content_hash": "", "raw_hash": "", "format": "txt", "collected_at": "t"}


def test_clean_records_fates(tmp_path):
    base = doc()
    korean = (
        "서울 사무소는 선릉역 근처 솔밭타워 9층에 있습니다. 평일 오전 9시부터 오후 6시까지 문을 엽니다. "
        "회의실은 사내 포털에서 최대 2시간까지 예약할 수 있고, 방문객은 1층 안내 데스크에서 출입증을 받습니다. "
        "점심 시간에는 근처 식당 목록을 참고하세요. 주차는 건물 지하 2층을 이용하며 하루 최대 3시간까지 무료입니다. "
        "택배는 매일 오후 3시에 우편실로 모입니다. 공휴일 일정은 별도 문서에 정리되어 있습니다. "
        "사무실 와이파이 비밀번호는 안내 데스크에 문의하면 됩니다. 신규 입사자는 첫날 오전 10시에 오리엔테이션에 참석합니다."
    )
    recs = [
        _rec("a.txt", base), _rec("b.txt", base), _rec("c.txt", edit(base, 3)), _rec("d.txt", doc()),
        _rec("e.txt", "tiny"), {**_rec("w.html", "tiny"), "source_uri": "https://example.com/w"}, _rec("k.md", korean), _rec("k2.md", korean.replace("오전 10시에", "오전 10시 반에")),
    ]
    write_records(tmp_path / "in.parquet", recs)
    res = clean_records(tmp_path / "in.parquet", CleanConfig(), tmp_path / "out")
    kept = {r["doc_id"] for r in read_records(tmp_path / "out" / "records.parquet")}
    fates = {f.unit: f for f in read_fates(tmp_path / "out" / "fates.jsonl")}
    assert kept == {"a.txt", "d.txt", "e.txt", "k.md"}  # a one-word note is content in a knowledge base
    assert fates["b.txt"].fate == "duplicate" and fates["b.txt"].reason.startswith("exact_duplicate: same text as a.txt")
    assert fates["c.txt"].fate == "duplicate" and "near_duplicate" in fates["c.txt"].reason
    assert fates["k2.md"].fate == "duplicate"
    assert fates["w.html"].fate == "filtered" and fates["w.html"].reason.startswith("too_short")  # web profile
    assert res.kept + res.dropped == len(recs)


def test_near_dedup_threshold_is_configurable(tmp_path):
    base = doc()
    write_records(tmp_path / "in.parquet", [_rec("a", base), _rec("b", edit(base, 25))])
    loose = clean_records(tmp_path / "in.parquet", CleanConfig(near_dedup_threshold=0.3), tmp_path / "o1")
    strict = clean_records(tmp_path / "in.parquet", CleanConfig(near_dedup_threshold=0.95), tmp_path / "o2")
    assert loose.kept == 1 and strict.kept == 2


def test_parallel_cleaning_matches_serial(tmp_path):
    recs = [_rec(f"{i:04d}.txt", doc(80)) for i in range(60)] + [_rec("dup.txt", "")]
    recs[-1]["text"] = recs[0]["text"]
    write_records(tmp_path / "in.parquet", recs)
    serial = clean_records(tmp_path / "in.parquet", CleanConfig(workers=1), tmp_path / "s")
    parallel = clean_records(tmp_path / "in.parquet", CleanConfig(workers=2), tmp_path / "p")
    assert read_records(tmp_path / "s" / "records.parquet") == read_records(tmp_path / "p" / "records.parquet")
    assert serial.dropped == parallel.dropped == 1


REPORT = ("Daily report for probe {p}. The study measured a mean latency of {v} ms across the Lisbon region; all "
          "checks passed and no incident was opened. Availability over the period stayed within the agreed "
          "objective, and the next calibration is scheduled as usual by the operations team.")


def test_templates_filled_with_other_values_are_not_near_duplicates():
    from tasks.ingest.dedup import other_values, template_key

    a = template_key(REPORT.format(p=7, v="104.2"))
    assert other_values(a, template_key(REPORT.format(p=7, v="98.6")))  # one measured value replaced
    assert not other_values(a, template_key(REPORT.format(p=7, v="104.2")))  # the same facts
    edited = REPORT.replace("as usual", "as planned").format(p=7, v="98.6")
    assert not other_values(a, template_key(edited))  # reworded too: an edited copy, a near duplicate
    exported = "Export 2025. " + REPORT.format(p=7, v="104.2")
    assert not other_values(template_key(exported), a)  # a number only added: still a duplicate


def test_knowledge_keeps_template_reports_web_deduplicates_them(tmp_path):
    recs = [_rec(f"r{i}.md", REPORT.format(p=1, v=100 + i)) for i in range(20)]
    recs.append(_rec("z-copy.md", REPORT.format(p=1, v=100)))  # the first report again, exactly
    write_records(tmp_path / "in.parquet", recs)
    knowledge = clean_records(tmp_path / "in.parquet", CleanConfig(), tmp_path / "k")
    web = clean_records(tmp_path / "in.parquet", CleanConfig(profile="web", min_chars=1), tmp_path / "w")
    assert knowledge.kept == 20 and web.kept < 10
    fates = {f.unit: f for f in read_fates(tmp_path / "k" / "fates.jsonl")}
    assert fates["z-copy.md"].fate == "duplicate" and fates["z-copy.md"].reason.startswith("exact_duplicate")
