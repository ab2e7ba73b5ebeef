"""Answer and retrieval metrics against known values, and the paired bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tasks.metrics import (
    answer_table,
    as_jsonable,
    exact_match,
    normalize_answer,
    paired_bootstrap,
    retrieval_metrics,
    rouge_l,
    token_f1,
)


def test_squad_normalisation_and_exact_match():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("Don't") == "dont"  # SQuAD removes punctuation, it does not split on it
    assert normalize_answer("ＡＢＣ。") == "abc"  # full-width forms and CJK punctuation
    assert exact_match("an apple", ["Apple."]) == 1.0
    assert exact_match("apples", ["apple"]) == 0.0
    assert exact_match("25 days", ["twenty-five days", "25 days"]) == 1.0  # best over references


def test_token_f1_known_values():
    # SQuAD's example arithmetic: 2 common tokens, precision 2/3, recall 2/4 -> F1 4/7
    assert token_f1("the cat sat down", ["a cat sat on the mat"]) == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))
    assert token_f1("cat sat down", ["cat sat on mat"]) == pytest.approx(4 / 7)
    assert token_f1("nothing shared", ["cat"]) == 0.0
    assert token_f1("", [""]) == 1.0 and token_f1("", ["x"]) == 0.0
    assert token_f1("서울 사무소 3층", ["서울 사무소 3층"]) == 1.0


def test_rouge_l_scores_every_script():
    assert rouge_l("the cat sat on the mat", ["the cat sat on the mat"]) == pytest.approx(1.0)
    # LCS "cat mat" = 2 of 3 and 2 of 4 tokens -> F 2*(2/3*1/2)/(2/3+1/2)
    assert rouge_l("cat the mat", ["cat on a mat"]) == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert rouge_l("회의실은 예약 시스템에서", ["회의실은 예약 시스템에서"]) == pytest.approx(1.0)  # not 0 as by default


def test_bleu_and_perplexity_are_corpus_level():
    import sacrebleu

    preds, refs = ["the cat is on the mat", "a dog barks loudly today"], [["the cat is on the mat"], ["a dog barks"]]
    table = answer_table(preds, refs, nll=[(2.0, 4), (6.0, 2)], unsafe=[0, 1])
    expected = sacrebleu.corpus_bleu(preds, [[r[0] for r in refs]], tokenize="intl", use_effective_order=True).score
    assert table.value("bleu") == pytest.approx(expected)
    assert table.value("perplexity") == pytest.approx(math.exp(8.0 / 6))  # total NLL over total tokens
    assert table.value("unsafe") == 1.0
    assert table.value("exact_match") == 0.5


def _table(values: list[float]):
    return answer_table([str(v) for v in values], [["x"]] * len(values))


def test_paired_bootstrap_is_deterministic_and_brackets_the_difference():
    rng = np.random.default_rng(1)
    ref = [("yes" if x else "no") for x in rng.random(60) < 0.3]
    cand = [("yes" if x else "no") for x in rng.random(60) < 0.7]
    a, b = answer_table(cand, [["yes"]] * 60), answer_table(ref, [["yes"]] * 60)
    one = paired_bootstrap(a, b, samples=500, seed=7)
    two = paired_bootstrap(a, b, samples=500, seed=7)
    assert as_jsonable(one) == as_jsonable(two)  # NaN (no direction for answer length) compares unequal
    em = one["exact_match"]
    assert em["ci_low"] <= em["diff"] <= em["ci_high"] and em["ci_low"] > 0 and em["p_not_better"] < 0.05
    other = paired_bootstrap(a, b, samples=500, seed=8)["exact_match"]
    assert other["diff"] == em["diff"] and (other["ci_low"], other["ci_high"]) != (em["ci_low"], em["ci_high"])


def test_identical_systems_have_no_significant_difference():
    a = answer_table(["yes", "no", "yes", "no"] * 5, [["yes"]] * 20)
    res = paired_bootstrap(a, a, samples=200, seed=0)
    assert res["exact_match"]["diff"] == 0 and res["exact_match"]["ci_low"] == res["exact_match"]["ci_high"] == 0
    assert res["exact_match"]["p_not_better"] == 1.0


def test_retrieval_metrics_known_values():
    runs = {"q1": ["d1", "d2", "d3"], "q2": ["d2", "d1"], "q3": ["d4", "d5", "d6"], "q4": ["d1"]}
    rel = {"q1": {"d1"}, "q2": {"d1"}, "q3": {"d9"}}  # q4 has no label: not scored
    m = retrieval_metrics(runs, rel, ks=(1, 2))
    assert m["questions"] == 3
    assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@2"] == pytest.approx(2 / 3)
    assert m["mrr@10"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 0) / 3)
