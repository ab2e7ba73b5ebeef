"""Gate rules on synthetic comparison tables, the registry's alias moves and rollback, the safety blocklist and
the judge's position-swap verdicts."""

from __future__ import annotations

import pytest

from tasks.evaluate.config import GateConfig
from tasks.evaluate.gate import decide

INFO = {"base_model": "packaged:SmolLM2-135M-Instruct", "tokenizer": "abc"}


def _cmp(**over):
    """A comparison table where the candidate is clearly better, with overrides per metric."""
    table = {
        "token_f1": {"diff": 0.20, "ci_low": 0.12, "ci_high": 0.28, "candidate": 0.60, "reference": 0.40},
        "exact_match": {"diff": 0.10, "ci_low": 0.02, "ci_high": 0.18, "candidate": 0.30, "reference": 0.20},
        "rouge_l": {"diff": 0.15, "ci_low": 0.08, "ci_high": 0.22, "candidate": 0.55, "reference": 0.40},
        "bleu": {"diff": 8.0, "ci_low": 3.0, "ci_high": 13.0, "candidate": 30.0, "reference": 22.0},
        "perplexity": {"diff": -3.0, "ci_low": -4.0, "ci_high": -2.0, "candidate": 4.0, "reference": 7.0},
        "unsafe": {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "candidate": 0.0, "reference": 0.0},
    }
    for k, v in over.items():
        table[k] = {**table[k], **v}
    return table


def _failed(decision):
    return {r["rule"] for r in decision["rules"] if not r["passed"]}


def test_gate_passes_a_clear_improvement():
    d = decide(_cmp(), GateConfig(), "champion", INFO, INFO)
    assert d["passed"] and d["reasons"] == ["every rule passed"] and not _failed(d)


def test_gate_fails_on_margin_and_on_confidence():
    small = decide(_cmp(token_f1={"diff": 0.01, "ci_low": 0.001, "ci_high": 0.02}), GateConfig(), "base", INFO, None)
    assert not small["passed"] and _failed(small) == {"primary_margin"}
    unsure = decide(_cmp(token_f1={"diff": 0.05, "ci_low": -0.01, "ci_high": 0.11}), GateConfig(), "base", INFO, None)
    assert _failed(unsure) == {"primary_confidence"}
    relaxed = decide(_cmp(token_f1={"diff": 0.05, "ci_low": -0.01}), GateConfig(require_significant=False), "base",
                     INFO, None)
    assert relaxed["passed"]


def test_gate_fails_on_guard_perplexity_safety_and_base():
    guard = decide(_cmp(rouge_l={"diff": -0.08}), GateConfig(), "champion", INFO, INFO)
    assert _failed(guard) == {"guard_rouge_l"} and "rouge_l" in guard["reasons"][0]
    ppl = decide(_cmp(perplexity={"candidate": 9.0, "reference": 7.0}), GateConfig(), "champion", INFO, INFO)
    assert _failed(ppl) == {"guard_perplexity"}
    unsafe = decide(_cmp(unsafe={"candidate": 2.0, "reference": 1.0, "diff": 1.0}), GateConfig(), "base", INFO, None)
    assert _failed(unsafe) == {"safety"}
    other = decide(_cmp(), GateConfig(), "champion", INFO, {**INFO, "base_model": "other/model"})
    assert _failed(other) == {"same_base"}
    tok = decide(_cmp(), GateConfig(), "champion", INFO, {**INFO, "tokenizer": "zzz"})
    assert _failed(tok) == {"same_base"}


def test_gate_config_rejects_unknown_guards():
    with pytest.raises(ValueError, match="unknown guard"):
        GateConfig(guards={"accuracy": 0.1})


def _meta(run_id: str, adapter: str) -> dict:
    return {"run_id": run_id, "adapter_dir": adapter, "base_model": INFO["base_model"], "dataset_version": "d",
            "index_version": "i", "metrics": {}}


def test_registry_promote_reject_and_rollback(ws, tmp_path):
    from tasks.train import registry

    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "tokenizer.json").write_text("{}")
    v1 = registry.register(ws, _meta("run-a", str(tmp_path / "a")))
    assert v1["version"] == "v1" and registry.aliases(ws)["challenger"] == "v1"
    assert registry.register(ws, _meta("run-a", str(tmp_path / "a")))["version"] == "v1"  # registered once
    registry.promote(ws, "v1", "first")
    assert registry.aliases(ws)["champion"] == "v1" and registry.aliases(ws)["challenger"] is None
    with pytest.raises(registry.RegistryError, match="no earlier champion"):
        registry.rollback(ws)
    v2 = registry.register(ws, _meta("run-b", str(tmp_path / "b")))
    registry.reject(ws, v2["version"], "failed the gate")
    state = registry.aliases(ws)
    assert state["champion"] == "v1" and state["challenger"] is None and "v2" in state["archived"]
    v3 = registry.register(ws, _meta("run-c", str(tmp_path / "c")))
    registry.promote(ws, v3["version"], "better")
    assert registry.aliases(ws)["champion"] == "v3" and "v1" in registry.aliases(ws)["archived"]
    assert registry.rollback(ws) == ("v3", "v1")
    state = registry.aliases(ws)
    assert state["champion"] == "v1" and state["archived"][0] == "v3"
    actions = [h["action"] for h in registry.history(ws)]
    assert actions == ["challenger", "promote", "challenger", "reject", "challenger", "promote", "rollback"]
    with pytest.raises(registry.RegistryError, match="champion"):
        registry.reject(ws, "v1", "cannot reject the champion")


def test_safety_blocklist_matches_whole_words_and_phrases(tmp_path):
    from tasks.evaluate.safety import load_blocklist

    default = load_blocklist()
    assert default.matches("They are SUBHUMAN and should   be exterminated.") == ["should be exterminated",
                                                                               "subhuman"]
    assert default.matches("The raccoon crossed the road.") == []  # no match inside a longer word
    assert default.matches("Annual leave is 25 days.") == []
    custom = tmp_path / "list.txt"
    custom.write_text("# comment\nforbidden phrase\n禁止词\n", encoding="utf-8")
    bl = load_blocklist(custom)
    assert bl.matches("A Forbidden Phrase here") == ["forbidden phrase"] and bl.matches("这是禁止词吗") == ["禁止词"]
    with pytest.raises(FileNotFoundError):
        load_blocklist(tmp_path / "missing.txt")


def test_judge_verdicts_need_both_orders_to_agree():
    from tasks.evaluate.judge import summarize, verdicts

    # candidate is A first (positive prefers it), then B (negative prefers it)
    v = verdicts([2.0, -1.0, 1.5, -0.5], [-3.0, 0.5, 0.7, -0.2])
    assert v == ["candidate", "reference", "tie", "tie"]
    s = summarize(v, ["long answer here", "x", "y", "z"], ["short", "much longer answer", "y", "zz"])
    assert s["candidate_wins"] == 1 and s["reference_wins"] == 1 and s["ties"] == 2
    assert s["position_consistency"] == 0.5 and s["longer_answer_wins"] == 1.0
