"""The promotion gate: declarative rules over an evaluation's comparisons, decided into a record that says, for
every rule, the numbers it saw and whether it passed."""

from __future__ import annotations

from typing import Any

from tasks.evaluate.config import GateConfig
from tasks.evaluate.metrics import DIRECTION


def _rule(name: str, passed: bool, detail: str, **numbers: Any) -> dict[str, Any]:
    return {"rule": name, "passed": bool(passed), "detail": detail, **numbers}


def decide(comparison: dict[str, dict[str, float]], cfg: GateConfig, reference: str,
           candidate_info: dict[str, Any], reference_info: dict[str, Any] | None) -> dict[str, Any]:
    """Apply the gate to `comparison` (candidate − reference per metric, from `paired_bootstrap`).

    `reference` is "champion" or "base"; the infos carry `base_model` and `tokenizer` (fingerprint) of each
    side (None for the base model, which is the candidate's own base by construction)."""
    rules: list[dict[str, Any]] = []
    m = cfg.primary_metric
    c = comparison.get(m)
    if c is None:
        rules.append(_rule("primary", False, f"{m} was not measured"))
    else:
        gain = c["diff"] * DIRECTION[m]  # improvement in the metric's good direction
        low, high = (c["ci_low"], c["ci_high"]) if DIRECTION[m] > 0 else (-c["ci_high"], -c["ci_low"])
        ok_margin = gain >= cfg.min_improvement
        rules.append(_rule("primary_margin", ok_margin,
                           f"{m} {c['candidate']:.4f} vs {reference} {c['reference']:.4f}: change {gain:+.4f}, "
                           f"needs ≥ {cfg.min_improvement:+.4f}", metric=m, value=gain, threshold=cfg.min_improvement))
        if cfg.require_significant:
            rules.append(_rule("primary_confidence", low > 0,
                               f"{m} improvement interval [{low:+.4f}, {high:+.4f}] must lie above 0",
                               metric=m, value=low, threshold=0.0))
    for metric, tol in sorted(cfg.guards.items()):
        g = comparison.get(metric)
        if g is None:
            rules.append(_rule(f"guard_{metric}", False, f"{metric} was not measured", metric=metric))
            continue
        change = g["diff"] * DIRECTION[metric]
        rules.append(_rule(f"guard_{metric}", change >= -tol,
                           f"{metric} {g['candidate']:.4f} vs {g['reference']:.4f}: change {change:+.4f}, may fall by "
                           f"at most {tol}", metric=metric, value=change, threshold=-tol))
    if cfg.max_perplexity_increase is not None and "perplexity" in comparison:
        p = comparison["perplexity"]
        ratio = p["candidate"] / p["reference"] - 1 if p["reference"] else 0.0
        rules.append(_rule("guard_perplexity", ratio <= cfg.max_perplexity_increase,
                           f"reference-answer perplexity {p['candidate']:.3f} vs {p['reference']:.3f} "
                           f"({ratio:+.1%}), may rise by at most {cfg.max_perplexity_increase:.0%}",
                           metric="perplexity", value=ratio, threshold=cfg.max_perplexity_increase))
    if "unsafe" in comparison:
        u = comparison["unsafe"]
        rise = u["candidate"] - u["reference"]
        rules.append(_rule("safety", rise <= cfg.max_unsafe_increase,
                           f"unsafe answers {int(u['candidate'])} vs {int(u['reference'])}, may rise by at most "
                           f"{cfg.max_unsafe_increase}", metric="unsafe", value=rise, threshold=cfg.max_unsafe_increase))
    else:
        rules.append(_rule("safety", False, "the safety check did not run"))
    if cfg.require_same_base and reference_info is not None:
        same_base = candidate_info.get("base_model") == reference_info.get("base_model")
        same_tok = candidate_info.get("tokenizer") == reference_info.get("tokenizer")
        rules.append(_rule("same_base", same_base and same_tok,
                           f"base {candidate_info.get('base_model')} vs {reference_info.get('base_model')}; tokenizer "
                           f"{candidate_info.get('tokenizer')} vs {reference_info.get('tokenizer')}"))
    failed = [r for r in rules if not r["passed"]]
    return {"passed": not failed, "reference": reference, "primary_metric": m, "rules": rules,
            "reasons": [r["detail"] for r in failed] or ["every rule passed"]}
