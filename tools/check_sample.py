"""Sanity checks for the bundled sample data (corpus + Q/A pairs).

Usage (from anywhere):

    python tools/check_sample.py

Standard library only. If pypdf is importable, the PDF documents are checked
too; otherwise answers that point at a PDF are skipped with a note.

Checks:
  * document counts by format (a JSONL record counts as one document);
  * every document has at least 300 characters of visible text and no two
    documents are near-duplicates;
  * at least 3 documents are written in Korean;
  * contact details (e-mail addresses) appear in at most one document;
  * every line of qa.jsonl parses and has exactly id, question, answer, doc_id;
  * ids and questions are unique;
  * every doc_id exists (a file, or ``path#record-id`` for a JSONL record);
  * every answer occurs, case-insensitively and with whitespace collapsed, in
    the visible text of its document.

Prints a summary and exits with status 1 if any problem was found.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent / "data" / "sample"  # the bundled sample this script checks
CORPUS = HERE / "corpus"
QA_FILE = HERE / "qa.jsonl"

DOC_RANGE = (50, 65)  # total documents, JSONL records counted individually
QA_RANGE = (250, 320)
MIN_CHARS = 300
MIN_KOREAN_DOCS = 3
NEAR_DUP_JACCARD = 0.5  # on word 5-gram shingles
QA_FIELDS = {"id", "question", "answer", "doc_id"}
FORMATS = ("md", "txt", "html", "pdf", "jsonl")

problems: list[str] = []
notes: list[str] = []


def problem(msg: str) -> None:
    problems.append(msg)


# --------------------------------------------------------------------------
# Extracting visible text
# --------------------------------------------------------------------------


class _VisibleText(HTMLParser):
    """Collects text outside <script>, <style>, <noscript> and <template>."""

    SKIP = {"script", "style", "noscript", "template"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self._skip_depth += 1

    def handle_endtag(self, tag):
        if tag in self.SKIP and self._skip_depth:
            self._skip_depth -= 1

    def handle_data(self, data):
        if not self._skip_depth:
            self.parts.append(data)


def html_text(raw: str) -> str:
    parser = _VisibleText()
    parser.feed(raw)
    parser.close()
    return " ".join(parser.parts)


def strip_front_matter(raw: str) -> str:
    if raw.startswith("---\n"):
        end = raw.find("\n---", 4)
        if end != -1:
            return raw[end + 4 :]
    return raw


_pdf_reader = None
_pdf_checked = False


def pdf_text(path: Path) -> str | None:
    global _pdf_reader, _pdf_checked
    if not _pdf_checked:
        _pdf_checked = True
        try:
            from pypdf import PdfReader  # type: ignore

            _pdf_reader = PdfReader
        except ImportError:
            notes.append("pypdf is not installed: PDF text and PDF answers were not checked")
    if _pdf_reader is None:
        return None
    reader = _pdf_reader(str(path))
    return "\n".join((page.extract_text() or "") for page in reader.pages)


def normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


# --------------------------------------------------------------------------
# Loading the corpus
# --------------------------------------------------------------------------


def load_corpus() -> tuple[dict[str, str | None], Counter]:
    """Return {doc_id: visible text or None if unreadable here} and file counts."""
    docs: dict[str, str | None] = {}
    counts: Counter = Counter()
    for path in sorted(CORPUS.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(CORPUS).as_posix()
        ext = path.suffix.lower().lstrip(".")
        if ext not in FORMATS:
            problem(f"unexpected file in corpus: {rel}")
            continue
        counts[ext] += 1
        if ext == "pdf":
            docs[rel] = pdf_text(path)
            continue
        raw = path.read_text(encoding="utf-8")
        if ext == "md":
            docs[rel] = strip_front_matter(raw)
        elif ext == "txt":
            docs[rel] = raw
        elif ext == "html":
            docs[rel] = html_text(raw)
        elif ext == "jsonl":
            seen: set[str] = set()
            for n, line in enumerate(raw.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    problem(f"{rel}:{n}: invalid JSON ({exc})")
                    continue
                rid = rec.get("id")
                if not isinstance(rid, str) or not isinstance(rec.get("text"), str):
                    problem(f"{rel}:{n}: record needs string 'id' and 'text'")
                    continue
                if rid in seen:
                    problem(f"{rel}:{n}: duplicate record id {rid}")
                seen.add(rid)
                counts["jsonl records"] += 1
                docs[f"{rel}#{rid}"] = f"{rec.get('title', '')}\n{rec['text']}"
    return docs, counts


def check_documents(docs: dict[str, str | None], counts: Counter) -> int:
    n_docs = len(docs)
    if not DOC_RANGE[0] <= n_docs <= DOC_RANGE[1]:
        problem(f"corpus has {n_docs} documents, expected {DOC_RANGE[0]}-{DOC_RANGE[1]}")
    for ext in ("md", "txt", "html", "pdf"):
        if counts[ext] == 0:
            problem(f"no .{ext} documents in the corpus")
    if counts["jsonl records"] == 0:
        problem("no JSONL records in the corpus")

    readable = {k: v for k, v in docs.items() if v is not None}
    for doc_id, text in readable.items():
        visible = " ".join(text.split())
        if len(visible) < MIN_CHARS:
            problem(f"{doc_id}: only {len(visible)} characters of visible text (< {MIN_CHARS})")

    korean = [d for d, t in readable.items() if len(re.findall(r"[\uac00-\ud7a3]", t)) >= 150]
    if len(korean) < MIN_KOREAN_DOCS:
        problem(f"only {len(korean)} Korean documents, expected at least {MIN_KOREAN_DOCS}")

    with_email = [d for d, t in readable.items() if re.search(r"[\w.+-]+@[\w-]+\.[\w.-]+", t)]
    if len(with_email) > 1:
        problem(f"e-mail addresses appear in more than one document: {with_email}")

    # Near-duplicate detection on word 5-gram shingles.
    shingles = {}
    for doc_id, text in readable.items():
        words = re.findall(r"\w+", text.casefold())
        shingles[doc_id] = {tuple(words[i : i + 5]) for i in range(max(0, len(words) - 4))}
    ids = sorted(shingles)
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            sa, sb = shingles[a], shingles[b]
            if sa and sb:
                jac = len(sa & sb) / len(sa | sb)
                if jac > NEAR_DUP_JACCARD:
                    problem(f"near-duplicate documents ({jac:.2f}): {a} and {b}")
    return len(korean)


# --------------------------------------------------------------------------
# Checking the Q/A file
# --------------------------------------------------------------------------


def check_qa(docs: dict[str, str | None]) -> tuple[int, int, int, Counter]:
    ids: set[str] = set()
    questions: set[str] = set()
    per_doc: Counter = Counter()
    n = korean = skipped = 0
    norm_cache = {k: normalise(v) for k, v in docs.items() if v is not None}
    for lineno, line in enumerate(QA_FILE.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            problem(f"qa.jsonl:{lineno}: blank line")
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            problem(f"qa.jsonl:{lineno}: invalid JSON ({exc})")
            continue
        if not isinstance(rec, dict) or set(rec) != QA_FIELDS:
            problem(f"qa.jsonl:{lineno}: expected exactly the fields {sorted(QA_FIELDS)}")
            continue
        if not all(isinstance(rec[f], str) and rec[f].strip() for f in QA_FIELDS):
            problem(f"qa.jsonl:{lineno}: all fields must be non-empty strings")
            continue
        n += 1
        qid, question, answer, doc_id = (rec[f] for f in ("id", "question", "answer", "doc_id"))
        if qid in ids:
            problem(f"qa.jsonl:{lineno}: duplicate id {qid}")
        ids.add(qid)
        qkey = normalise(question)
        if qkey in questions:
            problem(f"qa.jsonl:{lineno}: duplicate question {question!r}")
        questions.add(qkey)
        if answer.rstrip().endswith("."):
            problem(f"qa.jsonl:{lineno}: answer ends with a period")
        if re.search(r"[\uac00-\ud7a3]", question):
            korean += 1
        if doc_id not in docs:
            problem(f"qa.jsonl:{lineno}: doc_id {doc_id!r} does not exist")
            continue
        per_doc[doc_id] += 1
        if doc_id not in norm_cache:  # PDF without pypdf
            skipped += 1
            continue
        if normalise(answer) not in norm_cache[doc_id]:
            problem(f"qa.jsonl:{lineno} ({qid}): answer {answer!r} not found in {doc_id}")
    if not QA_RANGE[0] <= n <= QA_RANGE[1]:
        problem(f"qa.jsonl has {n} pairs, expected {QA_RANGE[0]}-{QA_RANGE[1]}")
    if skipped:
        notes.append(f"{skipped} answers in PDF documents were not checked")
    return n, korean, skipped, per_doc


def main() -> int:
    if not CORPUS.is_dir() or not QA_FILE.is_file():
        print(f"missing {CORPUS} or {QA_FILE}", file=sys.stderr)
        return 1
    docs, counts = load_corpus()
    n_korean_docs = check_documents(docs, counts)
    n_qa, n_korean_qa, _, per_doc = check_qa(docs)

    print("Sample corpus:", CORPUS)
    files = sum(counts[e] for e in FORMATS)
    print(f"  files: {files}  (" + ", ".join(f"{e}: {counts[e]}" for e in FORMATS) + ")")
    print(f"  documents: {len(docs)}  (JSONL records: {counts['jsonl records']}, Korean: {n_korean_docs})")
    print(f"Q/A pairs: {n_qa}  (Korean questions: {n_korean_qa})")
    without = sorted(d for d in docs if per_doc[d] == 0)
    print(
        f"  documents with Q/A: {len(docs) - len(without)} of {len(docs)}"
        + (f"; without: {', '.join(without)}" if without else "")
    )
    for note in notes:
        print("note:", note)
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for p in problems:
            print("  -", p)
        return 1
    print("\nOK: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
