"""The comparison's pure parts: failure attribution, the verdict sentence and its consistency with the numbers,
and the tables and page rendered from a comparison's files."""

from __future__ import annotations

import re

import pytest

from tasks.evaluate.attribution import (
    CHUNK,
    DOCUMENT,
    KINDS,
    NO_CONTEXT,
    READER,
    VERBOSE,
    attribute,
    dominant,
    present,
    shares,
)
from tasks.evaluate.compare.verdict import describe, effect_sign, effects_of, recommendation, verdict

CTX = "[1] Travel policy > Hotels: Lisbon €150 per night, London £180 per night."


def test_present_matches_phrases_after_normalisation_and_long_references_by_word_share():
    assert present("€150 per night", CTX) and present("The Logbook", "we call it the logbook.")
    assert not present("150", "1500 euros")  # whole words only
    assert not present("Deck", "a Deck-Call")  # a one-word reference is a phrase or nothing... (punctuation joins)
    assert present("every other Thursday at noon", "held at noon every other Thursday", recall=0.8)
    assert not present("every other Thursday at noon", "on Thursday", recall=0.8)
    assert not present("", CTX)


@pytest.mark.parametrize("answer,context,doc,ranked,kind", [
    ("€150 per night", CTX, "travel", ["travel"], None),  # right: no failure
    ("The limit is €150 per night in Lisbon.", CTX, "travel", ["travel"], VERBOSE),
    ("180 days", CTX, "travel", ["travel"], READER),
    ("€200", "[1] Expenses: meals are reimbursed.", "travel", ["expenses", "travel"], CHUNK),
    ("€200", "[1] Expenses: meals are reimbursed.", "travel", ["expenses"], DOCUMENT),
    ("€200", "[1] Expenses: meals are reimbursed.", None, [], DOCUMENT),  # no label: cannot say the doc was found
    ("€200", None, "travel", [], NO_CONTEXT),
    ("it is €150 per night", None, "travel", [], VERBOSE),  # closed-book but contains the reference
])
def test_each_wrong_answer_gets_one_kind(answer, context, doc, ranked, kind):
    correct = kind is None
    assert attribute(answer, ["€150 per night"], context, correct, doc, ranked) == kind


def test_shares_count_only_wrong_answers_and_name_the_dominant_kind():
    s = shares([None, READER, READER, VERBOSE, None])
    assert s["answers"] == 5 and s["wrong"] == 3 and s["counts"][READER] == 2 and set(s["counts"]) == set(KINDS)
    assert s["shares"][READER] == pytest.approx(2 / 3) and sum(s["shares"].values()) == pytest.approx(1)
    assert dominant(s) == READER and dominant(shares([None, None])) is None
    assert shares([])["wrong"] == 0


def _c(diff, lo, hi):
    return {"diff": diff, "ci_low": lo, "ci_high": hi}


def test_effect_signs_follow_the_interval_not_the_point():
    assert effect_sign(_c(0.1, 0.01, 0.2)) == 1 and effect_sign(_c(-0.1, -0.2, -0.01)) == -1
    assert effect_sign(_c(0.1, -0.01, 0.2)) == 0 and effect_sign(None) == 0 and effect_sign(_c(0.1, None, None)) == 0


@pytest.mark.parametrize("r,f,z,expect", [
    (_c(.2, .1, .3), _c(.1, .02, .2), _c(0, -.1, .1), "use both"),
    (_c(.2, .1, .3), _c(0, -.1, .1), _c(0, -.1, .1), "use retrieval; fine-tuning adds nothing"),
    (_c(.2, .1, .3), _c(-.1, -.2, -.05), _c(0, -.1, .1), "fine-tuning makes it worse"),
    (_c(0, -.1, .1), _c(0, -.1, .1), _c(.2, .1, .3), "use the fine-tuned model"),
    (_c(0, -.1, .1), _c(0, -.1, .1), _c(0, -.1, .1), "no system is measurably better"),
])
def test_recommendation_follows_the_significant_effects(r, f, z, expect):
    effects = {"retrieval": r, "fine_tuning_with_retrieval": f, "fine_tuning_alone": z}
    assert expect in recommendation(effects, "v2")


def test_verdict_states_every_effect_with_its_interval():
    effects = {"retrieval": _c(0.214, 0.15, 0.271), "fine_tuning_with_retrieval": _c(0.1, 0.02, 0.2),
               "fine_tuning_alone": _c(0.01, -0.02, 0.05), "rerank": _c(-0.03, -0.06, -0.01)}
    text = verdict(effects, "token_f1", 45, 0.95, "v2")
    assert text.startswith("On 45 test questions (95% intervals), retrieval gives +0.214 [+0.150, +0.271] token F1;")
    for c in effects.values():
        assert describe(c) in text
    assert "closed-book fine-tuning alone gives +0.010 [-0.020, +0.050], not significant" in text
    assert "reranking adds -0.030 [-0.060, -0.010] to the fine-tuned model with retrieval, worse" in text
    assert text.endswith("use both: retrieval and fine-tuning (v2) each help.")
    assert verdict({}, "token_f1", 3, 0.95, "v2").startswith("No comparison")


def test_effects_are_read_from_the_pairwise_comparisons():
    comps = {"base/rag vs base/closed": {"token_f1": _c(0.2, 0.1, 0.3)}, "tuned/rag vs base/rag": {"token_f1":
             _c(0.1, 0.0, 0.2)}, "tuned/closed vs base/closed": {"exact_match": _c(0.1, 0.0, 0.2)}}
    e = effects_of(comps, "token_f1")
    assert set(e) == {"retrieval", "fine_tuning_with_retrieval"} and e["retrieval"]["diff"] == 0.2


def _data():
    cells = {}
    for key, f1 in (("base/closed", 0.03), ("tuned/closed", 0.05), ("base/rag", 0.13), ("tuned/rag", 0.45)):
        m, mode = key.split("/")
        cells[key] = {"model": m, "mode": mode, "metrics": {"token_f1": f1, "exact_match": f1 / 2, "bleu": 3.0},
                      "cost": {"prompt_tokens": 54.0 if mode == "closed" else 219.0, "seconds_per_answer": 0.3},
                      "failures": shares([READER, None, VERBOSE] if mode == "rag" else [NO_CONTEXT] * 3)}
    comps = {f"{k} vs base/closed": {"token_f1": _c(v["metrics"]["token_f1"] - 0.03, 0.01, 0.5)}
             for k, v in cells.items() if k != "base/closed"}
    comps["tuned/rag vs base/rag"] = {"token_f1": _c(0.32, 0.05, 0.6)}
    effects = effects_of(comps, "token_f1")
    return {"compare_id": "abc", "path": "/x", "report": "/x.html", "created_at": "now", "split": "test",
            "examples": 3, "metric": "token_f1", "index_version": "i1", "context_k": 2, "cells": cells,
            "comparisons": comps, "effects": effects, "retrieval": {"rag": {"recall@1": 1.0, "questions": 3}},
            "tuned": {"label": "v1", "run_id": "r1", "base_model": "m", "train_runtime_s": 217.0, "steps": 16,
                      "device": "cpu", "quantization": "nf4-double-quant", "adapter_bytes": 19_600_000},
            "verdict": verdict(effects, "token_f1", 3, 0.95, "v1"), "config": {"confidence": 0.95,
                                                                              "report_examples": 2}}


def test_tables_and_page_show_every_cell_interval_cost_and_failure_kind():
    from tasks.evaluate.compare.report import markdown, matrix_rows, render_html, text_table

    data = _data()
    rows = matrix_rows(data)
    assert [r["cell"] for r in rows] == ["base/closed", "tuned/closed", "base/rag", "tuned/rag"]
    assert rows[0]["diff"] is None and rows[3]["diff"] == pytest.approx(0.42)
    lines = text_table(data)
    assert len(lines) == 5 and "+0.420 [+0.010, +0.500]" in lines[4] and "219" in lines[4]
    md = markdown(data)
    assert data["verdict"] in md and "217 s of training" in md and "19.6 MB" in md
    examples = [{"question": "Hotel limit?", "reference": "€150", "context_rag": "Lisbon €150 per night",
                 "tuned/rag": {"answer": "180 days", "failure": READER}}]
    html = render_html(data, examples)
    assert "data:image/png;base64," in html and "Where answers fail" in html and "<mark>€150</mark>" in html
    assert html.count("reader failure") >= 2  # the shares table and the examples heading
    assert re.search(r"fine-tuning on top of retrieval.*\+0\.320", html)
