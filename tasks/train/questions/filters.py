"""The checks a generated pair must pass, each small and named, each returning the reason it failed (None: pass).
Run in this order by `build`: length, support by its chunk, no quoted answer, the per-document cap, near-duplicate
questions, and the round trip through the served retriever."""

from __future__ import annotations

import re
import unicodedata

from tasks.ingest.dedup import NearDuplicateIndex, signature, tokens

MIN_QUESTION_CHARS = 8


def normalize(text: str) -> str:
    """Case-, width- and punctuation-insensitive words of a text."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.findall(r"[^\W_]+", text))


def words(text: str) -> list[str]:
    return normalize(text).split()


def check_length(question: str, answer: str, max_answer_chars: int) -> str | None:
    """A question long enough to mean something; an answer that is short (a fact, not a section)."""
    if len(question.strip()) < MIN_QUESTION_CHARS:
        return f"too_short: question under {MIN_QUESTION_CHARS} characters"
    if not words(answer):
        return "empty_answer: no words in the answer"
    if len(answer) > max_answer_chars:
        return f"too_long: answer of {len(answer)} characters > {max_answer_chars}"
    return None


def check_support(answer: str, chunk_text: str, min_overlap: float) -> tuple[str | None, str]:
    """(reason or None, how): supported when the answer is a span of the chunk (after whitespace and case
    folding), else when at least `min_overlap` of its words occur in the chunk."""
    if normalize(answer) and normalize(answer) in normalize(chunk_text):
        return None, "span"
    ans = words(answer)
    have = set(words(chunk_text))
    share = sum(w in have for w in ans) / len(ans) if ans else 0.0
    if share >= min_overlap:
        return None, f"overlap {share:.2f}"
    return f"unsupported: {share:.0%} of the answer's words are in its chunk (needs {min_overlap:.0%})", ""


def check_quotes_answer(question: str, answer: str) -> str | None:
    """A question that already contains its answer teaches nothing (and is solved by copying)."""
    q, a = normalize(question), normalize(answer)
    if a and (f" {a} " in f" {q} "):
        return "quotes_answer: the question contains the answer"
    aw = set(a.split())
    if len(aw) >= 2 and aw <= set(q.split()):
        return "quotes_answer: every word of the answer is in the question"
    return None


def near_duplicates(questions: list[str], threshold: float, answers: list[str] | None = None,
                    ) -> list[int | None]:
    """For each question, the index of an earlier pair it repeats, else None: the same normalised question, or
    question word sets at least `threshold` similar (MinHash LSH candidates, then the exact Jaccard) with the same
    answer words at least half shared. Template questions that differ in their subject ("the default for
    max_jobs" vs "for proxy_url") have other answers, so they are different questions, not duplicates."""
    exact: dict[str, int] = {}
    index = NearDuplicateIndex(threshold=threshold, num_perm=128)
    sets = [set(tokens(q)) for q in questions]
    ans = [set(words(a)) for a in answers] if answers is not None else None
    out: list[int | None] = []
    for i, q in enumerate(questions):
        key = normalize(q)
        if key in exact:
            out.append(exact[key])
            continue
        exact[key] = i
        dup = None
        if sets[i]:
            sig = signature(q, shingle_size=1, toks=sorted(sets[i]))
            for key, _ in index.matches(sig):
                j = int(key)
                if _jaccard(sets[i], sets[j]) >= threshold and (ans is None or _jaccard(ans[i], ans[j]) >= 0.5):
                    dup = j
                    break
            index.add(str(i), sig)
        out.append(dup)
    return out


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def check_round_trip(doc_id: str, retrieved_doc_ids: list[str], k: int) -> str | None:
    """The served retriever must bring back the pair's source document in its top k for the question: a pair
    whose document cannot be found teaches the model to answer without its evidence."""
    if doc_id in retrieved_doc_ids[:k]:
        return None
    return f"round_trip: the source document is not in the served retriever's top {k} for the question"
