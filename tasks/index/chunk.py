"""Token-aware recursive splitting of document text into chunk spans that fit the embedding model."""

from __future__ import annotations

import json
import re
import uuid
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from tasks.index.embed import LOAD_LOCK

# Fixed for ever (uuid5(NAMESPACE_URL, "https://github.com/ragtune/chunks")): changing it changes every chunk id.
CHUNK_NAMESPACE = uuid.UUID("0be4113e-ddc4-5fd4-bde3-5e07fa31ba61")
# WordPiece turns any word over 100 characters into one [UNK], so a token count alone does not bound a
# chunk: "x" * 10_000_000 is a single token. Chunks also hold at most chunk_size * 16 characters.
MAX_CHARS_PER_TOKEN = 16
WINDOW = 65_536  # characters tokenized at once when a span has no separator left to split at

# Separators after markdown headings, most structural first; a span is cut at the end of each match.
_SEPARATORS = (
    re.compile(r"\n\s*\n"),  # blank lines: paragraphs
    re.compile(r"\n"),  # lines
    # sentence ends: Latin-style punctuation needs a following space (3.5, e.g.x); CJK full stops never do
    re.compile(r"[.!?][\"'”’)\]]*(?=\s|$)|[。！？][」』”’）)]*"),
    re.compile(r"\s+"),  # words
)
_HEADING = re.compile(
    r"^ {0,3}(?:(?P<fence>`{3,}|~{3,})[^\n]*|(?P<hashes>#{1,6})[ \t]+(?P<title>[^\n]*?)(?:[ \t]+#+)?[ \t\r]*)$", re.M)
_CJK = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F))  # BERT's "Chinese" chars

Piece = tuple[int, int, int]  # start, end, token count (measured or estimated)


@dataclass(frozen=True)
class Span:
    """One chunk: text[start:end], and the markdown heading path in effect at its start ("" if none)."""

    start: int
    end: int
    section: str  # e.g. "Leave policy > Parental leave"


def _model_max_length(tokenizer: Any) -> int:
    """sentence-transformers' max_seq_length where the model folder has one, else the tokenizer's own."""
    name = str(getattr(tokenizer, "name_or_path", "") or "")
    path: Any = Path(name) / "sentence_bert_config.json"
    if name and not Path(name).is_dir():  # a hub id: its cached copy, if any (never a download)
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(name, "sentence_bert_config.json")
    if isinstance(path, str | Path) and Path(path).is_file():
        return int(json.loads(Path(path).read_text(encoding="utf-8"))["max_seq_length"])
    n = getattr(tokenizer, "model_max_length", 512)
    return int(n) if n and n < 1_000_000 else 512  # transformers' "no limit" is a huge sentinel


class TokenCounter:
    """Counts tokens of a Hugging Face fast tokenizer (no special tokens) and gives token offsets."""

    def __init__(self, tokenizer: Any, max_length: int | None = None) -> None:
        from tokenizers import Tokenizer

        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        if not isinstance(backend, Tokenizer):
            raise TypeError("TokenCounter needs a fast (Rust-backed) tokenizer")
        # a private copy without the truncation and padding that tokenizer.json may set (MiniLM's: 128)
        self._backend = Tokenizer.from_str(backend.to_str())
        self._backend.no_truncation()
        self._backend.no_padding()
        self.tokenizer = tokenizer
        self._max_length = max_length or _model_max_length(tokenizer)
        special = getattr(tokenizer, "num_special_tokens_to_add", None)
        self._num_special = special(pair=False) if special else len(self._backend.encode("").ids)

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> TokenCounter:
        """The tokenizer of a local model folder (or a cached hub id); never downloads."""
        with LOAD_LOCK:  # see LOAD_LOCK: transformers' first import is not thread-safe
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
        return cls(tokenizer)

    def count(self, text: str) -> int:
        """Number of tokens in `text`, without special tokens."""
        return len(self._backend.encode(text, add_special_tokens=False).ids)

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of every token of `text`, in order."""
        return self._backend.encode(text, add_special_tokens=False).offsets

    @property
    def max_length(self) -> int:
        """The model's longest input, special tokens included."""
        return self._max_length

    @property
    def num_special(self) -> int:
        """Special tokens the model adds to one sequence ([CLS] and [SEP] for BERT)."""
        return self._num_special


def _glued(a: str, b: str) -> bool:
    """Whether a tokenizer sees the two adjacent characters as one word (so a cut between them splits it)."""
    return a.isalnum() and b.isalnum() and not any(lo <= ord(c) <= hi for c in (a, b) for lo, hi in _CJK)


class _Toks:
    """Absolute character spans of the tokens of one tokenized stretch of the text."""

    def __init__(self, text: str, base: int, offsets: list[tuple[int, int]]) -> None:
        self.text = text
        self.starts = [base + a for a, _ in offsets]
        self.ends = [base + b for _, b in offsets]

    def count(self, a: int, b: int) -> int:
        """Tokens starting in [a, b): exact for spans cut at whitespace or punctuation."""
        return bisect_left(self.starts, b) - bisect_left(self.starts, a)

    def cuttable(self, k: int) -> bool:
        # Korean syllables become several jamo tokens sharing one character: never end a chunk among them
        return self.starts[k] > self.starts[k - 1] and self.starts[k] >= self.ends[k - 1]

    def word_start(self, k: int) -> bool:
        # after a gap (whitespace), or a letter not glued to the one before; punctuation belongs to its word
        a = self.starts[k]
        return self.ends[k - 1] < a or (self.text[a].isalnum() and not _glued(self.text[a - 1], self.text[a]))

    def best_cut(self, lo: int, hi: int, limit: int) -> int | None:
        """Token index in (lo, limit) to end a stretch before: the last word start in the upper half of
        (lo, hi], else the last cuttable token there, else the first cuttable one after hi."""
        for k in range(hi, lo + max(1, (hi - lo) // 2) - 1, -1):
            if self.cuttable(k) and self.word_start(k):
                return k
        for k in range(hi, lo, -1):
            if self.cuttable(k):
                return k
        return next((k for k in range(hi + 1, limit) if self.cuttable(k)), None)


class _Splitter:
    """One split_text call: the heading paths of the text, the recursive split into pieces, the merge."""

    def __init__(self, text: str, counter: TokenCounter, size: int, overlap: int) -> None:
        self.text, self.counter, self.size, self.overlap = text, counter, size, overlap
        self.cap = size * MAX_CHARS_PER_TOKEN
        self.heads: list[int] = []  # start of every heading line, and the heading path from there on
        self.paths: list[str] = []
        stack: list[str] = []
        fence = ""
        for m in _HEADING.finditer(text):
            if m["fence"]:  # a '#' inside fenced code is a comment, not a heading
                fence = "" if fence and m["fence"][0] == fence else fence or m["fence"][0]
            elif not fence and m["title"].strip():
                level = len(m["hashes"])  # a new heading ends every deeper one; skipped levels stay empty
                stack = (stack + [""] * level)[:level - 1] + [m["title"].strip()]
                self.heads.append(m.start("hashes"))
                self.paths.append(" > ".join(t for t in stack if t))

    def section(self, pos: int) -> str:
        i = bisect_right(self.heads, pos) - 1
        return self.paths[i] if i >= 0 else ""

    def strip(self, a: int, b: int) -> tuple[int, int]:
        text = self.text
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        return a, b

    def tokenize(self, a: int, b: int) -> _Toks:
        return _Toks(self.text, a, self.counter.offsets(self.text[a:b]))

    def cut(self, a: int, b: int, level: int) -> Iterator[tuple[int, int]]:
        """Stripped, non-empty parts of [a, b) between the separators of one level."""
        if level == 0:
            points: Iterator[int] = iter(self.heads[bisect_right(self.heads, a):bisect_left(self.heads, b)])
        else:
            points = (m.end() for m in _SEPARATORS[level - 1].finditer(self.text, a, b))
        prev = a
        for p in chain(points, (b,)):
            s, e = self.strip(prev, p)
            if s < e:
                yield s, e
            prev = p

    def walk(self, a: int, b: int, level: int, toks: _Toks | None) -> Iterator[Piece]:
        """Pieces of at most `size` tokens covering [a, b), split at the most structural separator first."""
        # tokenize a span once, when it first gets small enough; its parts are counted from those offsets
        if toks is None and b - a <= self.cap:
            toks = self.tokenize(a, b)
        if toks is not None and (n := toks.count(a, b)) <= self.size:
            yield a, b, n
        elif level <= len(_SEPARATORS):
            parts = self.cut(a, b, level)
            for s, e, t in ((s, e, toks) for s, e in parts) if toks is not None else self.batched(parts):
                yield from self.walk(s, e, level + 1, t)
        elif toks is not None:
            yield from self.group(a, b, toks)
        else:  # one huge "word" (a 10 MB line, CJK without punctuation): a window at a time
            while a < b:
                w = min(b, a + WINDOW)
                t = self.tokenize(a, w)
                k = t.best_cut(0, len(t.starts) - 1, len(t.starts)) if w < b and len(t.starts) > 1 else None
                stop = w if k is None else t.starts[k]  # the last word may run past the window: redo it
                yield from self.group(a, stop, t)
                a = stop

    def batched(self, parts: Iterator[tuple[int, int]]) -> Iterator[tuple[int, int, _Toks | None]]:
        """Parts of a long span, neighbours tokenized together (one call per `cap` characters, not per word)."""
        run: list[tuple[int, int]] = []
        for s, e in chain(parts, [(-1, -1)]):
            if run and (s < 0 or e - run[0][0] > self.cap):
                t = self.tokenize(run[0][0], run[-1][1])
                yield from ((x, y, t) for x, y in run)
                run = []
            if e - s > self.cap:
                yield s, e, None
            elif s >= 0:
                run.append((s, e))

    def group(self, a: int, b: int, t: _Toks) -> Iterator[Piece]:
        """Runs of tokens with no separator between them, sized so that an overlap still fits beside one."""
        g = max(1, self.size - self.overlap)
        i, last = bisect_left(t.starts, a), bisect_left(t.starts, b)
        while True:
            k = t.best_cut(i, i + g, last) if i + g < last else None
            stop = b if k is None else t.starts[k]
            s, e = self.strip(a, stop)
            n = (last if k is None else k) - i
            for x in range(s, e, self.cap):  # a giant [UNK] is cut by characters: nothing else bounds it
                ps, pe = self.strip(x, min(e, x + self.cap))
                if ps < pe:
                    yield ps, pe, n
            if k is None:
                return
            a, i = stop, k

    def overlap_start(self, prev: tuple[_Toks, set[int]], budget: int, nxt: int) -> tuple[int, int] | None:
        """Where the chunk whose first piece starts at `nxt` starts inside the previous one, and its tokens:
        a piece start (a sentence, say) if one gives at least half the budget, else the earliest word start.
        Never before the heading in effect at `nxt`: a section's chunks do not begin with the last one's tail."""
        toks, pieces = prev
        n = len(toks.starts)
        lo = max(1, n - budget)
        if budget <= 0 or lo >= n:
            return None
        h = bisect_right(self.heads, nxt) - 1
        floor = self.heads[h] if h >= 0 else 0
        # no overlap rather than one that starts inside a word
        cuts = [k for k in range(lo, n) if toks.cuttable(k) and toks.starts[k] >= floor and toks.word_start(k)]
        ranked = [k for k in cuts if toks.starts[k] in pieces and n - k >= budget // 2] + cuts
        end = toks.ends[-1]
        for k in ranked[:3]:  # counted on its own, a stretch can be more tokens than inside the chunk
            if (m := self.counter.count(self.text[toks.starts[k]:end])) <= budget:
                return toks.starts[k], m
        return None

    def emit(self, cs: int, cur: list[Piece], back: list[Piece], out: list[Span]) -> tuple[_Toks, set[int]]:
        """Appends the chunk [cs, end of cur) after checking its real token count; shrinks it if needed
        and gives what it leaves out `back` (last piece on top) to come round again."""
        while True:
            ce = cur[-1][1]
            toks = self.tokenize(cs, ce)
            n = len(toks.starts)
            if n <= self.size:
                break
            # counts are not quite additive at cuts inside words: give back a piece, then the overlap
            if len(cur) > 1:
                back.append(cur.pop())
            elif cs < cur[0][0]:
                cs = cur[0][0]
            else:
                k = toks.best_cut(0, self.size, n)
                if k is None:  # one character is more tokens than the chunk size: nothing smaller exists
                    break
                back.append((toks.starts[k], ce, n - k))
                cur = [(*self.strip(cs, toks.starts[k]), k)]
                if k > self.size:
                    toks = self.tokenize(cs, cur[0][1])
                    break
        out.append(Span(cs, cur[-1][1], self.section(cs)))
        return toks, {p[0] for p in cur}

    def heading_only(self, p: Piece) -> bool:
        """Whether the piece is a heading line and nothing else."""
        i = bisect_left(self.heads, p[0])
        return i < len(self.heads) and self.heads[i] == p[0] and "\n" not in self.text[p[0]:p[1]]

    def split(self) -> list[Span]:
        a, b = self.strip(0, len(self.text))
        out: list[Span] = []
        if a == b:
            return out
        pieces, back, cur = self.walk(a, b, 0, None), list[Piece](), list[Piece]()
        cs = est = 0
        prev: tuple[_Toks, set[int]] | None = None
        while (p := back.pop() if back else next(pieces, None)) is not None or cur:
            if p is not None and cur and est + p[2] <= self.size and p[1] - cs <= self.cap:
                cur.append(p)
                est += p[2]
            elif cur:  # the chunk is full (or the text is done): emit it; what it gives back comes round again
                if p is not None:
                    back.append(p)
                    if len(cur) > 1 and self.heading_only(cur[-1]):  # a heading goes with the text under it
                        back.append(cur.pop())
                prev = self.emit(cs, cur, back, out)
                cur = []
            else:
                cur, cs, est = [p], p[0], p[2]
                ov = self.overlap_start(prev, min(self.overlap, self.size - p[2]), p[0]) if prev else None
                if ov and p[1] - ov[0] <= self.cap:
                    cs, est = ov[0], est + ov[1]
        return out


def split_text(text: str, counter: TokenCounter, chunk_size: int, chunk_overlap: int) -> list[Span]:
    """Recursive split of `text` into ordered, stripped spans of at most `chunk_size` tokens each that
    together cover every non-whitespace character; consecutive spans share up to `chunk_overlap` tokens."""
    if chunk_size < 1 or not 0 <= chunk_overlap < chunk_size:
        raise ValueError(f"need 0 <= chunk_overlap < chunk_size, got {chunk_overlap} and {chunk_size}")
    return _Splitter(text, counter, chunk_size, chunk_overlap).split()


def chunk_budget(counter: TokenCounter, chunk_size: int, prefix: str) -> int:
    """Tokens left for chunk text so that `prefix + text` fits the model: min(chunk_size, max_length - num_special - count(prefix)).

    0 when the prefix alone fills the model; the prefix should end in whitespace so that counts add up."""
    return max(0, min(chunk_size, counter.max_length - counter.num_special - counter.count(prefix)))


def chunk_id(content_hash: str, config_fingerprint: str, index: int) -> str:
    """uuid5 (fixed project namespace) of f"{content_hash}:{config_fingerprint}:{index}" as a string."""
    return str(uuid.uuid5(CHUNK_NAMESPACE, f"{content_hash}:{config_fingerprint}:{index}"))
