"""Where a wrong answer failed: the reference answer was not in the prompt's passages (retrieval), it was there but
the answer missed it (reader), or the answer holds it inside a longer text (format / verbosity).

Texts are compared after SQuAD normalisation (`tasks.evaluate.metrics.normalize_answer`). A reference is *present* in a
text when its normalised words appear there as a phrase, or when at least `recall` of its words do (long
references are rarely copied word for word)."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

from tasks.evaluate.metrics import normalize_answer

# Kinds, in the order a user would fix them; `None` for a right answer.
VERBOSE = "verbose"  # the answer contains the reference in a longer text (fix: output format, training data)
READER = "reader"  # the reference is in the prompt, the answer misses it (fix: training data, model size)
CHUNK = "retrieval_chunk"  # the right document's passage is in the prompt, but it lacks the answer: chunking
DOCUMENT = "retrieval_document"  # the right document is not in the prompt (ranked too low, or unknown): retrieval
NO_CONTEXT = "closed_book"  # no passages in the prompt and the answer misses the reference (knowledge)
KINDS = (VERBOSE, READER, CHUNK, DOCUMENT, NO_CONTEXT)
LABELS = {VERBOSE: "format / verbosity: answer contains the reference in a longer text",
          READER: "reader failure: reference in the prompt's passages, answer misses it",
          CHUNK: "chunk miss: a passage of the right document is in the prompt, but not the one with the answer",
          DOCUMENT: "document miss: no passage of the right document is in the prompt",
          NO_CONTEXT: "closed-book miss: no passages, the model does not know the answer"}
ADVICE = {VERBOSE: "shorter answers: the output format, the system prompt or training answers",
          READER: "the reader: more or better training data, or a larger model",
          CHUNK: "chunking: chunk size, overlap or the passages' length in the prompt (context_chars, context_k)",
          DOCUMENT: "retrieval: more passages (context_k), the embedding model, a reranker, or the corpus",
          NO_CONTEXT: "retrieval: give the model the passages (closed-book answers cannot know the corpus)"}


def present(reference: str, text: str, recall: float = 0.8) -> bool:
    """The normalised reference occurs in the normalised text as a phrase, or `recall` of its words do."""
    ref = normalize_answer(reference).split()
    if not ref:
        return False
    words = normalize_answer(text).split()
    if f" {' '.join(ref)} " in f" {' '.join(words)} ":
        return True
    if len(ref) == 1:
        return False  # a one-word reference is present as a phrase or not at all
    have = collections.Counter(words)
    found = sum(min(n, have[w]) for w, n in collections.Counter(ref).items())
    return found / len(ref) >= recall


def attribute(answer: str, references: Sequence[str], context: str | None, correct: bool,
              doc_id: str | None = None, retrieved_doc_ids: Sequence[str] = (), recall: float = 0.8) -> str | None:
    """The failure kind of one answer (None when it is right). `context` is the passages' text as the prompt
    held them (None or empty for closed-book prompts); `retrieved_doc_ids` the documents of those passages."""
    if correct:
        return None
    if any(present(r, answer, recall) for r in references):
        return VERBOSE
    if not context:
        return NO_CONTEXT
    if any(present(r, context, recall) for r in references):
        return READER
    if doc_id and doc_id in set(retrieved_doc_ids):
        return CHUNK
    return DOCUMENT


def shares(kinds: Sequence[str | None]) -> dict[str, Any]:
    """Counts of each kind, the number of wrong answers, and each kind's share of the wrong answers."""
    counts = collections.Counter(k for k in kinds if k)
    wrong = sum(counts.values())
    return {"answers": len(kinds), "wrong": wrong, "counts": {k: counts.get(k, 0) for k in KINDS},
            "shares": {k: (counts.get(k, 0) / wrong if wrong else 0.0) for k in KINDS}}


def dominant(summary: dict[str, Any]) -> str | None:
    """The most common failure kind (None when nothing failed)."""
    counts = summary.get("counts") or {}
    best = max(KINDS, key=lambda k: counts.get(k, 0))
    return best if counts.get(best, 0) else None


def attribute_all(rows: list[dict[str, Any]], answers: list[str], table: Any, inputs: dict[str, Any],
                  recall: float = 0.8) -> list[str | None]:
    """The failure kind of each answer of one system (None where it is an exact match)."""
    em = table.stats["exact_match"][:, 0]
    return [attribute(a, [r["answer"]], inputs["contexts"][i], bool(em[i]), r.get("doc_id"), inputs["in_prompt"][i],
                      recall) for i, (a, r) in enumerate(zip(answers, rows, strict=True))]
