"""Answer and retrieval metrics against known values, and the paired bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tasks.evaluate.metrics import (
    answer_table,
    as_jsonable,
    exact_match,
    normalize_answer,
    paired_bootstrap,
    rouge_l,
    token_f1,
)
from tasks.index.retrieval_eval import retrieval_metrics


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


# --- METEOR (nltk + WordNet 3.0) ----------------------------------------------------------------------------
# nltk's own doctests (nltk/translate/meteor_score.py, single_meteor_score and meteor_score docstrings)
_H1 = "It is a guide to action which ensures that the military always obeys the commands of the party"
_R1 = "It is a guide to action that ensures that the military will forever heed Party commands"
_R2 = ("It is the guiding principle which guarantees the military forces always being under the command "
       "of the Party")
_R3 = "It is the practical guide for the army always to heed the directions of the party"


def test_meteor_reproduces_nltk_doctests():
    from nltk.translate.meteor_score import meteor_score

    from tasks.evaluate.textmetrics import meteor, wordnet

    assert round(meteor(_H1, [_R1]), 4) == 0.6944
    assert round(meteor(_H1, [_R1, _R2, _R3]), 4) == 0.6944  # the best over references
    assert meteor("non matching hypothesis", ["this is a cat"]) == 0.0
    # the wrapper is nltk's function on our tokens
    h2 = "It is to insure the troops forever hearing the activity guidebook that party direct"
    assert meteor(h2, [_R1, _R2, _R3]) == meteor_score([r.lower().split() for r in (_R1, _R2, _R3)],
                                                        h2.lower().split(), wordnet=wordnet())


def test_meteor_stems_synonyms_and_edge_cases():
    from tasks.evaluate.textmetrics import meteor

    # Lavie & Agarwal: F = PR/(0.9P + 0.1R), penalty 0.5 * (chunks/matches)^3
    assert meteor("the auto", ["the car"]) == pytest.approx(1 - 0.5 * (1 / 2) ** 3)  # WordNet synonym
    # nltk looks synonyms up on the Porter stems the stem stage leaves behind: "automobile" became "automobil"
    assert meteor("the car", ["the automobile"]) == pytest.approx(0.5 * (1 - 0.5))
    assert meteor("the commands", ["the command"]) == pytest.approx(1 - 0.5 * (1 / 2) ** 3)  # Porter stem
    assert meteor("the car", ["the banana"]) == pytest.approx(0.5 * (1 - 0.5))  # one match of two, one chunk
    assert meteor("Paris.", ["paris"]) == pytest.approx(1 - 0.5)  # punctuation and case are not tokens
    assert meteor("", ["x"]) == 0.0 and meteor("x", [""]) == 0.0 and meteor("x", []) == 0.0
    assert meteor("서울 사무소 3층", ["서울 사무소 3층"]) == pytest.approx(1 - 0.5 * (1 / 3) ** 3)


@pytest.fixture
def no_wordnet(monkeypatch):
    from tasks.evaluate import textmetrics

    textmetrics._wordnet.cache_clear()
    monkeypatch.setattr(textmetrics, "wordnet_sources", lambda: [])
    yield
    textmetrics._wordnet.cache_clear()


def test_meteor_is_absent_not_wrong_without_wordnet(no_wordnet, caplog):
    from tasks.evaluate.textmetrics import meteor

    with caplog.at_level("WARNING", logger="ragtune.metrics"):
        first, second = answer_table(["a cat"], [["a cat"]]), answer_table(["a dog"], [["a cat"]])
    assert "meteor" not in first.stats and "meteor" not in second.summary()
    said = [r.getMessage() for r in caplog.records if r.name == "ragtune.metrics"]
    assert len(said) == 1 and "METEOR is not computed: no WordNet found" in said[0]  # once, with the reason
    with pytest.raises(RuntimeError, match="WordNet"):
        meteor("a cat", ["a cat"])


# --- BERTScore (bert-score with the packaged all-MiniLM-L6-v2) ---------------------------------------------
# bert-score's own published example values use roberta-large (its English default), which is not available
# offline, so they cannot be reproduced here; the wrapper is checked against the bert_score package instead.
_MODEL = "packaged:all-MiniLM-L6-v2"


def test_bertscore_layer_and_weights_rules(tmp_path):
    from tasks.evaluate.textmetrics import _encoder_folder, bertscore_layer

    assert bertscore_layer(_MODEL) == 5 and bertscore_layer(_MODEL, 3) == 3
    assert bertscore_layer("roberta-large") == 17  # bert-score's tuned table for the models it knows
    with pytest.raises(ValueError, match="bertscore_layer"):
        bertscore_layer(str(tmp_path))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="safetensors"):
        _encoder_folder(str(tmp_path))


@pytest.mark.slow
def test_bertscore_scores_meaning_and_equals_bert_score():
    import bert_score

    from tasks.evaluate.textmetrics import bertscore
    from tasks.index.embed import resolve_model_path

    cands = ["The capital of France is Paris.", "A dog runs in the park.", "Stock prices fell sharply today.",
             "the meeting room is booked online"]
    refs = [["The capital of France is Paris."], ["A puppy is running through the park."],
            ["A puppy is running through the park."],
            ["You book meeting rooms in the booking system.", "Online."]]
    ours = bertscore(cands, refs, _MODEL)
    assert ours["f1"][0] == pytest.approx(1.0, abs=1e-5)
    assert ours["f1"][1] > ours["f1"][2] + 0.2  # paraphrase above an unrelated sentence
    p, r, f = bert_score.score(cands, refs, model_type=resolve_model_path(_MODEL), num_layers=5)
    for key, theirs in (("precision", p), ("recall", r), ("f1", f)):
        np.testing.assert_allclose(ours[key], theirs.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_bertscore_empty_and_korean_answers():
    from tasks.evaluate.textmetrics import bertscore

    out = bertscore(["", "   ", "회의실은 예약 시스템에서", "서울 사무소 3층", "x"],
                    [["x"], ["x"], ["회의실은 예약 시스템에서"], ["회의실은 예약 시스템에서"], [""]], _MODEL)
    assert out["f1"][[0, 1, 4]].tolist() == [0.0, 0.0, 0.0]  # nothing to match: 0, as bert-score defines it
    assert out["f1"][2] == pytest.approx(1.0, abs=1e-5) and 0 < out["f1"][3] < out["f1"][2]
    assert np.isfinite(out["precision"]).all() and np.isfinite(out["recall"]).all()


@pytest.mark.slow
def test_answer_table_and_bootstrap_carry_meteor_and_bertscore():
    from tasks.evaluate.textmetrics import bertscore, meteor

    refs = [["Paris"], ["the car is red"], ["twenty five days"], ["서울 사무소 3층"]] * 3
    cand = ["Paris", "the auto is red", "25 days", "서울 사무소 3층"] * 3
    base = ["London", "a bicycle", "", "모름"] * 3
    a = answer_table(cand, refs, bertscore_model=_MODEL, bertscore_layer=5)
    b = answer_table(base, refs, bertscore_model=_MODEL)
    assert a.stats["meteor"].shape == (12, 1) and a.stats["bertscore"].shape == (12, 3)
    expected = np.mean([meteor(p, r) for p, r in zip(cand, refs, strict=True)])
    assert a.value("meteor") == pytest.approx(expected)
    assert a.value("bertscore") == pytest.approx(bertscore(cand, refs, _MODEL)["f1"].mean())  # F1, then P, R
    res = paired_bootstrap(a, b, samples=300, seed=0)
    for name in ("meteor", "bertscore"):
        assert res[name]["ci_low"] <= res[name]["diff"] <= res[name]["ci_high"]
        assert res[name]["diff"] > 0 and res[name]["p_not_better"] < 0.05
    assert "bertscore" not in answer_table(cand, refs).stats  # no encoder, no column
