"""Question/answer pairs from the structure knowledge bases already have, with no generator model: FAQ entries,
headings and the text under them, definition sentences, table rows, changelog entries and key/value settings.

Every answer is a span of the document's text (`Candidate.start:end`), so it can be cited and checked. Documents
arrive as ingest left them: Markdown-ish text (Office files, CSV, HTML and PDF are converted to headings,
paragraphs, lists and pipe tables). The FAQ, table, changelog and setting patterns work in any script; heading and
definition questions are phrased in English (documented)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

KINDS = ("faq", "table", "setting", "changelog", "definition", "heading")
MAX_ANSWER_CHARS = 300  # a short answer: a sentence or two, never a whole section


@dataclass(frozen=True)
class Candidate:
    """One generated pair: the question, its answer (exactly `text[start:end]` of the document) and where from."""

    kind: str
    question: str
    answer: str
    start: int
    end: int
    context: str = ""  # the heading or table the pair came from (shown in reviews)


@dataclass(frozen=True)
class Line:
    text: str
    start: int  # offset of the line's first character in the document

    @property
    def end(self) -> int:
        return self.start + len(self.text)

    @property
    def stripped(self) -> str:
        return self.text.strip()


def lines_of(text: str) -> list[Line]:
    out, pos = [], 0
    for raw in text.split("\n"):
        out.append(Line(raw, pos))
        pos += len(raw) + 1
    return out


_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
_QA_Q = re.compile(r"^\s*(?:\*\*|__)?\s*(?:Q|Question|질문|問)\s*[.:：)]\s*(?P<q>.+?)\s*(?:\*\*|__)?\s*$", re.I)
_QA_A = re.compile(r"^\s*(?:\*\*|__)?\s*(?:A|Answer|답변|답|答)\s*[.:：)]\s*(?:\*\*|__)?\s*(?P<a>\S.*)$", re.I)
_QUESTION_END = ("?", "？")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])(?:\s+|$)")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")
_VERSION = re.compile(r"^\s*(?:#{1,6}\s*)?\[?(?:v|version\s+)?(?P<ver>\d+(?:\.\d+){1,3}(?:[-.][\w]+)?)\]?"
                      r"(?:\s*(?:[-–—:(]|\s)\s*(?P<date>[^)\n]{4,40}?))?\)?\s*$", re.I)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}|\b\d{1,2}\s+[A-Z][a-z]+\.?\s+\d{4}\b|\b[A-Z][a-z]+\.?\s+\d{1,2},?\s+\d{4}\b")
_SETTING_BULLET = re.compile(r"^\s*[-*+]\s+(?:`(?P<k1>[^`]{1,60})`|\*\*(?P<k2>[^*]{1,60})\*\*)\s*(?:[:=]|—|–|\s-\s)\s*"
                             r"(?P<v>\S.{0,200})$")
_SETTING_LINE = re.compile(r"^\s*(?P<k>[A-Za-z_][\w.\-]{0,60})\s*[:=]\s*(?P<v>[^#;\n]*?)\s*(?:[#;].*)?$")
_CONFIG_FENCES = {"yaml", "yml", "ini", "toml", "properties", "env", "dotenv", "conf", "cfg", "config"}
_DEFINITION = re.compile(
    r"^(?:(?P<article>The|An?)\s+)?(?P<term>`[^`]{2,60}`"
    r"|[A-Z][\w'’.\-]*(?:\s+(?:[A-Z0-9][\w'’.\-]*|of|for|and|the|de|la)){0,5}"
    r"|(?:(?<=A\s)|(?<=An\s))[a-z][\w'’\-]*(?:\s+[a-z][\w'’\-]*)?)"  # "A watcher is ...": a lowercase term after an article
    r"\s+(?P<verb>is|are|means|refers to|stands for)\s+(?P<def>[^.!?]{8,200})[.!?]")
_DETERMINERS = frozenset({"a", "an", "the", "one", "our", "your", "their", "its", "his", "her", "this", "that"})
# the first word of "X is ..." that makes it a statement about X rather than what X is ("is required", "are sent")
_NOT_DEFINITIONS = frozenset({
    "not", "also", "now", "available", "required", "used", "only", "still", "being", "usually", "often", "always",
    "never", "currently", "set", "located", "based", "made", "done", "given", "shown", "kept", "held", "run", "sent",
    "built", "paid", "known", "seen", "taken", "written", "found", "put", "read", "left", "brought", "bought", "told",
    "sold", "led", "meant", "cut", "shut", "spread", "split", "lost", "hidden", "chosen",
    # an adverb or a preposition first: "are sometimes contrived", "are at greater risk", "is in Lisbon"
    "sometimes", "generally", "typically", "mostly", "mainly", "largely", "rarely", "very", "more", "less",
    "at", "in", "on", "of", "for", "with", "by", "from", "to", "under", "over", "about", "among", "between"})
_NOT_TERMS = frozenset(["it", "this", "that", "there", "these", "those", "he", "she", "they", "we", "you", "i", "each", "every", "everything", "nothing", "something", "anyone", "everyone", "here", "what", "which", "who", "when", "where", "why", "how", "if", "all", "some", "most", "many", "our", "your", "their", "its", "his", "her", "one", "none", "no", "yes", "today", "tomorrow", "now"])


def _answer_span(text: str, start: int, end: int, limit: int = MAX_ANSWER_CHARS) -> tuple[int, int]:
    """The first sentence(s) of text[start:end], at most `limit` characters (cut at a sentence end when one
    fits), without leading bullets, list numbers, answer markers or surrounding markup."""
    seg = text[start:end]
    lead = len(seg) - len(seg.lstrip())
    m = _BULLET.match(seg[lead:]) or _QA_A.match(seg[lead:])
    if m and m.re is _QA_A:
        lead += m.start("a")
    elif m:
        lead += m.end()
    s = start + lead
    body = text[s:end]
    if m and m.re is _BULLET:  # a list: its first item is the answer
        body = body.split("\n", 1)[0]
    cut = len(body)
    if cut > limit:
        ends = [m.end() for m in _SENTENCE_END.finditer(body) if m.end() <= limit]
        cut = ends[-1] if ends else limit
    first = _SENTENCE_END.search(body)
    if first and first.end() < cut and first.end() >= 12:  # a short first sentence is answer enough
        cut = first.end()
    s, e = _strip_markup(text, s, s + cut)
    return s, e


def _strip_markup(text: str, s: int, e: int) -> tuple[int, int]:
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    for mark in ("**", "__", "`", "*", "_", '"'):
        n = len(mark)
        if e - s > 2 * n and text.startswith(mark, s) and text.endswith(mark, s, e) and mark not in text[s + n:e - n]:
            s, e = s + n, e - n
    return s, e


def _paragraph_after(lines: list[Line], i: int) -> tuple[int, int] | None:
    """(start, end) of the paragraph that follows line i (blank lines skipped; stops at a blank line, a
    heading, a fence, a table or another question)."""
    j = i + 1
    while j < len(lines) and not lines[j].stripped:
        j += 1
    if j >= len(lines) or _is_break(lines[j]):
        return None
    k = j
    while k + 1 < len(lines) and lines[k + 1].stripped and not _is_break(lines[k + 1]) \
            and not _QA_Q.match(lines[k + 1].text):
        k += 1
    return lines[j].start, lines[k].end


def _is_break(line: Line) -> bool:
    s = line.stripped
    return bool(_HEADING.match(line.text) or _FENCE.match(line.text) or s.startswith("|"))


def _clean(question: str) -> str:
    """Markdown emphasis, code marks and heading hashes removed; `snake_case` names kept."""
    q = re.sub(r"`|\*\*|(?<!\w)__|__(?!\w)|^#+\s*", "", question.strip())
    q = re.sub(r"(?<!\w)[*_](?=\S)|(?<=\S)[*_](?!\w)", "", q)
    return re.sub(r"\s+", " ", q).strip()


def faq(text: str, title: str) -> Iterator[Candidate]:
    """`Q: ... / A: ...` pairs, and question lines (headings, bold lines or lines of their own ending in `?`)
    followed by a paragraph."""
    lines = lines_of(text)
    for i, line in enumerate(lines):
        m = _QA_Q.match(line.text)
        question = m.group("q") if m else None
        if question is None:
            h = _HEADING.match(line.text)
            body = h.group(2) if h else line.stripped
            if not body.rstrip("*_ ").endswith(_QUESTION_END) or len(body) > 200 or _BULLET.match(line.text):
                continue
            if not h and i > 0 and lines[i - 1].stripped and not lines[i - 1].stripped.endswith(_QUESTION_END):
                continue  # a question inside running text, not an entry of its own
            question = body
        para = _paragraph_after(lines, i)
        if para is None:
            continue
        s, e = _answer_span(text, *para)
        if e > s:
            yield Candidate("faq", _clean(question), text[s:e], s, e, _clean(question))


def headings(text: str, title: str) -> Iterator[Candidate]:
    """A heading and the first sentence under it: "What does <title> say about <heading>?" (English)."""
    lines = lines_of(text)
    for i, line in enumerate(lines):
        h = _HEADING.match(line.text)
        if not h:
            continue
        heading = _clean(h.group(2))
        if heading.endswith(_QUESTION_END) or not _latin(heading) or heading.casefold() == title.casefold():
            continue
        if len(heading) < 3 or len(heading) > 80:
            continue
        para = _paragraph_after(lines, i)
        if para is None or _QA_Q.match(text[para[0]:para[1]]):
            continue
        s, e = _answer_span(text, *para)
        if e - s >= 12 and not text[s:e].endswith(":"):  # "... are:" introduces a list, it answers nothing
            about = heading if heading[:2].isupper() else heading[:1].lower() + heading[1:]
            yield Candidate("heading", f"What does {title} say about {about}?", text[s:e], s, e, heading)


def definitions(text: str, title: str) -> Iterator[Candidate]:
    """Sentences like "Deck Call is the company-wide meeting ..." → "What is Deck Call?" (English)."""
    for para_start, para in _paragraphs(text):
        for sent_start, sent in _sentences(para):
            m = _DEFINITION.match(sent)
            if not m:
                continue
            term = m.group("term").strip("`")
            if term.split()[0].casefold() in _NOT_TERMS or len(term) < 2:
                continue
            verb = m.group("verb")
            first = m.group("def").split()[0].casefold()
            if first.endswith(("ed", "en")) or first in _NOT_DEFINITIONS or (
                    verb == "is" and first not in _DETERMINERS and not first.endswith(("'s", "’s"))):
                continue  # "X is required ...", "X are replaced ...": a statement about X, not what X is
            if m.group("article"):  # "The Ledger is ..." asks about the Ledger; "A watcher is ..." about a watcher
                term = f"{m.group('article').lower()} {term}"
            question = {"is": f"What is {term}?", "are": f"What are {term}?", "means": f"What does {term} mean?",
                        "refers to": f"What does {term} refer to?",
                        "stands for": f"What does {term} stand for?"}[verb]
            s = para_start + sent_start + m.start("def")
            e = para_start + sent_start + m.end("def")
            s, e = _strip_markup(text, s, e)
            yield Candidate("definition", question, text[s:e], s, e, term)


def tables(text: str, title: str, max_rows: int = 12, max_columns: int = 3) -> Iterator[Candidate]:
    """Pipe tables: for a row keyed by its first cell and a column header, "What is the <header> for <key> in
    <heading>?" → the cell."""
    lines = lines_of(text)
    heading = title
    i = 0
    while i < len(lines):
        h = _HEADING.match(lines[i].text)
        if h:
            heading = _clean(h.group(2))
        if lines[i].stripped.startswith("|") and i + 1 < len(lines) and re.match(r"^\s*\|?\s*:?-{2,}", lines[i + 1].text):
            header = [c for c, _, _ in _cells(lines[i])]
            j = i + 2
            rows = 0
            while j < len(lines) and lines[j].stripped.startswith("|"):
                cells = _cells(lines[j])
                if rows < max_rows and len(cells) >= 2 and cells[0][0]:
                    key = _clean(cells[0][0])
                    for col in range(1, min(len(cells), len(header), max_columns + 1)):
                        name, (value, s, e) = _clean(header[col]), cells[col]
                        if not name or not value or value.strip("-—– ") == "" or _clean(value) == key:
                            continue
                        s, e = _strip_markup(text, s, e)
                        yield Candidate("table", f"What is the {name.lower() if name[1:2].islower() else name} for "
                                        f"{key} in {heading}?", text[s:e], s, e, f"{heading}: {key}")
                    rows += 1
                j += 1
            i = j
            continue
        i += 1


def _cells(line: Line) -> list[tuple[str, int, int]]:
    """(text, start, end) of each cell of a pipe-table line (escaped pipes stay in the cell)."""
    out, raw, base = [], line.text, line.start
    bounds = [m.start() for m in re.finditer(r"(?<!\\)\|", raw)]
    if not bounds:
        return out
    if raw[: bounds[0]].strip():
        bounds = [-1, *bounds]
    if raw[bounds[-1] + 1:].strip():
        bounds.append(len(raw))
    for a, b in zip(bounds, bounds[1:], strict=False):
        cell = raw[a + 1:b]
        lead = len(cell) - len(cell.lstrip())
        value = cell.strip()
        out.append((value, base + a + 1 + lead, base + a + 1 + lead + len(value)))
    return out


def changelog(text: str, title: str) -> Iterator[Candidate]:
    """Version entries (`## 2.1.0 - 2024-03-01`, `1.4 - 3 July 2018`): when each was released, and what it
    changed (its first entry)."""
    lines = lines_of(text)
    for i, line in enumerate(lines):
        m = _VERSION.match(line.text)
        if not m or len(line.stripped) > 80:
            continue
        ver = m.group("ver")
        date = m.group("date") or ""
        dm = _DATE.search(date)
        if dm:
            s = line.start + m.start("date") + dm.start()
            yield Candidate("changelog", f"When was version {ver} released, according to {title}?",
                            text[s:s + len(dm.group(0))], s, s + len(dm.group(0)), ver)
        para = _paragraph_after(lines, i)
        if para is not None:
            s, e = _answer_span(text, *para)
            if e - s >= 8:
                yield Candidate("changelog", f"What changed in version {ver}, according to {title}?", text[s:e], s,
                                e, ver)


def settings(text: str, title: str) -> Iterator[Candidate]:
    """Key/value settings: ``- `key`: value`` bullets, and `key: value` / `key = value` lines inside YAML, INI,
    TOML or .env code blocks → "What is <key> set to in <title>?"."""
    lines = lines_of(text)
    fence: str | None = None
    for line in lines:
        f = _FENCE.match(line.text)
        if f:
            fence = None if fence is not None else (f.group(2) or "").lower()
            continue
        if fence is None:
            m = _SETTING_BULLET.match(line.text)
            if not m:
                continue
            key, vs, ve = (m.group("k1") or m.group("k2")).strip(), m.start("v"), m.end("v")
        elif fence in _CONFIG_FENCES:
            m = _SETTING_LINE.match(line.text)
            if not m or not m.group("v").strip():
                continue
            key, vs, ve = m.group("k"), m.start("v"), m.end("v")
        else:
            continue
        s, e = _answer_span(text, line.start + vs, line.start + ve, limit=160)
        s, e = _strip_markup(text, s, e)
        if e > s and text[s:e].strip("'\"") and key.casefold() != text[s:e].casefold():
            if text[s] in "'\"" and text[e - 1] == text[s] and e - s > 2:
                s, e = s + 1, e - 1
            yield Candidate("setting", f"What is {key} set to in {title}?", text[s:e], s, e, key)


def _paragraphs(text: str) -> Iterator[tuple[int, str]]:
    """(start, text) of prose paragraphs: not headings, fences, tables or lists."""
    in_fence = False
    for block in re.finditer(r"(?:[^\n]+\n?)+", text):
        first = block.group(0).lstrip()
        if _FENCE.match(block.group(0)):
            in_fence = not in_fence if block.group(0).count("```") % 2 else in_fence
            continue
        if in_fence or first.startswith(("#", "|", "```", ">")) or _BULLET.match(first):
            continue
        yield block.start(), block.group(0)


def _sentences(para: str) -> Iterator[tuple[int, str]]:
    pos = 0
    for m in _SENTENCE_END.finditer(para):
        sent = para[pos:m.end()]
        lead = len(sent) - len(sent.lstrip())
        if sent.strip():
            yield pos + lead, sent[lead:]
        pos = m.end()


def _latin(s: str) -> bool:
    letters = [c for c in s if c.isalpha()]
    return bool(letters) and sum(c.isascii() for c in letters) / len(letters) > 0.8


GENERATORS = {"faq": faq, "table": tables, "setting": settings, "changelog": changelog, "definition": definitions,
              "heading": headings}


def generate(text: str, title: str, kinds: tuple[str, ...] = KINDS) -> list[Candidate]:
    """Every candidate of the given kinds in document order, without exact repeats of a question; the order of
    `kinds` is the preference when one answer span is claimed by two kinds (an FAQ entry beats its heading)."""
    seen_q: set[str] = set()
    spans: set[tuple[int, int]] = set()
    out: list[Candidate] = []
    for kind in kinds:
        for c in GENERATORS[kind](text, title):
            key = " ".join(c.question.casefold().split())
            if key in seen_q or (c.start, c.end) in spans or not c.answer.strip():
                continue
            seen_q.add(key)
            spans.add((c.start, c.end))
            out.append(c)
    return sorted(out, key=lambda c: (c.start, KINDS.index(c.kind)))
