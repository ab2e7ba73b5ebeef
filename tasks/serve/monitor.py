"""The figures of a monitoring window over the request log and feedback, the rules that make it degraded, and its report."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.workspace import Workspace, atomic_write_json, read_json
from tasks.serve.clients import asked, cap_share, client_of, latest_votes, vote_bursts
from tasks.serve.config import GuardrailConfig, MonitorConfig, MonitorRules
from tasks.serve.requestlog import FEEDBACK, REQUESTS, read_records

EVENT = "ragtune.quality.degraded"
DEFAULT_THRESHOLD = 0.2  # the server's own fallback when neither the config nor a calibration sets one
PSI_EPS = 1e-4  # keeps ln(a/e) finite for bins one side leaves empty (the usual PSI smoothing)


def load_calibration(ws: Workspace) -> dict[str, Any]:
    """{threshold, reference_scores, calibrated}: `serve/calibration.json`, or the guardrail default and no
    reference (drift is then unknown) when the server was never calibrated."""
    cal = read_json(ws.root / "serve" / "calibration.json", default=None)
    if not isinstance(cal, dict) or cal.get("threshold") is None:
        threshold = GuardrailConfig().min_support
        return {"threshold": DEFAULT_THRESHOLD if threshold is None else threshold, "reference_scores": [],
                "calibrated": False}
    ref = [float(s) for s in cal.get("reference_scores") or [] if s is not None and math.isfinite(float(s))]
    return {"threshold": float(cal["threshold"]), "reference_scores": ref, "calibrated": True}


def psi_bins(n_live: int, n_reference: int, most: int = 10) -> int:
    """About ten scores per bin on the smaller side, 2 to `most` bins: with ten fixed bins, PSI of 40 scores drawn
    from the reference itself averages about 0.27 (bins - 1 over n), past the usual 0.25 alarm."""
    return max(2, min(most, min(n_live, n_reference) // 10))


def psi(live: list[float], reference: list[float], bins: int | None = None, eps: float = PSI_EPS) -> float | None:
    """Population stability index of `live` against `reference`, on bins cut at the reference's quantiles (so
    each holds about the same share of the reference; `psi_bins` of them by default); None when either side is
    empty."""
    if not live or not reference:
        return None
    ref, cur = np.asarray(reference, dtype=float), np.asarray(live, dtype=float)
    bins = bins or psi_bins(cur.size, ref.size)
    cuts = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1))[1:-1])
    if cuts.size == 0:  # a constant reference: one cut at its value still tells "below" from "at or above"
        cuts = np.asarray([ref[0]])
    expected = np.bincount(np.searchsorted(cuts, ref, side="right"), minlength=cuts.size + 1) / ref.size
    actual = np.bincount(np.searchsorted(cuts, cur, side="right"), minlength=cuts.size + 1) / cur.size
    expected, actual = np.clip(expected, eps, None), np.clip(actual, eps, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks(live: list[float], reference: list[float]) -> tuple[float | None, float | None]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value (None, None when either side is empty)."""
    if not live or not reference:
        return None, None
    from scipy.stats import ks_2samp

    res = ks_2samp(np.asarray(live, dtype=float), np.asarray(reference, dtype=float))
    return float(res.statistic), float(res.pvalue)


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def _refused(rec: dict[str, Any]) -> bool:
    """Refused by an input guardrail: the server answers those, and only those, with a 4xx."""
    return 400 <= int(rec.get("status") or 0) < 500


def quality_sample(requests: list[dict[str, Any]], rules: MonitorRules) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The requests the figures are computed on: questions (not operational refusals), no client over its share."""
    questions, rejected = asked(requests)
    sample, info = cap_share(questions, rules.max_client_share, "request_id")
    return sample, {**info, "rejected": rejected}


def counted_votes(feedback: list[dict[str, Any]], rules: MonitorRules) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The votes the thumbs-up rate is computed on: the latest per request and client, no burst, no client over
    its share."""
    votes, tally = latest_votes(feedback)
    bursts = vote_bursts(feedback, rules.max_votes_per_minute)
    votes = [v for v in votes if v.get("client") not in bursts]
    sample, info = cap_share(votes, rules.max_client_share, "feedback_id")
    return sample, {**tally, **info, "bursts": bursts}


def window_figures(requests: list[dict[str, Any]], feedback: list[dict[str, Any]], threshold: float,
                   reference: list[float], rules: MonitorRules | None = None) -> dict[str, Any]:
    """Every figure of one window; a figure without data is None (unknown), never 0."""
    rules = rules or MonitorRules()
    sample, who = quality_sample(requests, rules)
    votes, tally = counted_votes(feedback, rules)
    answered = [r for r in sample if r.get("status") == 200]
    supports = [float(r["support"]) for r in answered if r.get("support") is not None]
    latencies = [float(r["latency_ms"]) for r in sample if r.get("latency_ms") is not None]
    ratings = [f["rating"] for f in votes]
    blocked = sum(1 for r in sample if _refused(r) or r.get("blocked"))
    ks_stat, ks_p = ks(supports, reference)
    return {
        "requests": len(sample), "answered": len(answered), "ratings": len(ratings),
        "clients": len({client_of(r, "request_id") for r in answered}), "capped_clients": len(who["capped"]),
        "rejected": who["rejected"], "votes": tally["votes"], "uncounted_votes": tally["uncounted"],
        "replaced_votes": tally["replaced"], "rating_clients": tally["clients"],
        "rated_requests": len({f.get("request_id") for f in votes}), "vote_bursts": tally["bursts"],
        "thumbs_up_rate": _rate(ratings.count("up"), len(ratings)),
        "not_found_rate": _rate(sum(1 for r in answered if r.get("not_found")), len(answered)),
        "block_rate": _rate(blocked, len(sample)),
        "no_document_rate": _rate(sum(1 for s in supports if s < threshold), len(supports)),
        "support_threshold": threshold,
        "latency_p50_ms": float(np.percentile(latencies, 50)) if latencies else None,
        "latency_p95_ms": float(np.percentile(latencies, 95)) if latencies else None,
        "live_scores": len(supports), "reference_scores": len(reference),
        "score_psi": psi(supports, reference), "score_ks": ks_stat, "score_ks_pvalue": ks_p,
    }


def broken_rules(figures: dict[str, Any], rules: MonitorRules) -> list[str]:
    """One readable reason per broken rule; a window with too few answered requests or too few clients, and a rule
    whose figure or limit is unknown, break nothing (the thumbs-up rule also waits for votes of min_clients)."""
    if figures["answered"] < rules.min_requests or figures.get("clients", rules.min_clients) < rules.min_clients:
        return []
    out = []
    up, n = figures["thumbs_up_rate"], figures["ratings"]
    if rules.min_thumbs_up_rate is not None and up is not None and n >= rules.min_feedback \
            and figures.get("rating_clients", rules.min_clients) >= rules.min_clients and up < rules.min_thumbs_up_rate:
        out.append(f"thumbs-up rate {up:.2f} < {rules.min_thumbs_up_rate:.2f} over {n} ratings")
    checks = [
        ("not_found_rate", rules.max_not_found_rate, "not-found rate", f"over {figures['answered']} answers"),
        ("block_rate", rules.max_block_rate, "guardrail block rate", f"over {figures['requests']} requests"),
        ("no_document_rate", rules.max_no_document_rate, "no-document share",
         f"(support < {figures['support_threshold']:.2f}) over {figures['live_scores']} answers"),
    ]
    for key, limit, label, detail in checks:
        value = figures[key]
        if limit is not None and value is not None and value > limit:
            out.append(f"{label} {value:.2f} > {limit:.2f} {detail}")
    value, p = figures["score_psi"], figures["score_ks_pvalue"]
    significant = rules.max_drift_pvalue is None or (p is not None and p < rules.max_drift_pvalue)
    if rules.max_score_psi is not None and value is not None and value > rules.max_score_psi and significant:
        out.append(f"retrieval score drift: PSI {value:.2f} > {rules.max_score_psi:.2f} (KS {figures['score_ks']:.2f},"
                   f" p={figures['score_ks_pvalue']:.2g}) over {figures['live_scores']} answers vs "
                   f"{figures['reference_scores']} evaluation questions")
    value = figures["latency_p95_ms"]
    if rules.max_latency_p95_ms is not None and value is not None and value > rules.max_latency_p95_ms:
        out.append(f"latency p95 {value:.0f} ms > {rules.max_latency_p95_ms:.0f} ms over {figures['requests']} requests")
    return out


def text_histogram(live: list[float], reference: list[float], bins: int = 10, width: int = 24) -> str:
    """Live vs reference supports as a fixed-width text chart (a markdown artifact cannot show a local image)."""
    values = live + reference
    if not values:
        return "(no retrieval scores in this window)"
    lo, hi = min(min(values), 0.0), max(max(values), 1.0)
    edges = np.linspace(lo, hi, bins + 1)

    def shares(xs: list[float]) -> np.ndarray:
        counts, _ = np.histogram(xs, bins=edges) if xs else (np.zeros(bins), None)
        return counts / max(len(xs), 1)

    def bar(share: float) -> str:
        return ("#" * round(share * width)).ljust(width)

    live_s, ref_s = shares(live), shares(reference)
    lines = [f"{'support':<13} {'live':<{width}} {'reference':<{width}}"]
    for i in range(bins):
        lines.append(f"{edges[i]:+.2f}..{edges[i + 1]:+.2f} {bar(live_s[i])} {bar(ref_s[i])}")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "unknown"
    if not isinstance(value, float):
        return str(value)
    return f"{value:.3f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.2g}"  # tiny p-values stay readable


FIGURE_LIMITS = [("thumbs_up_rate", "min_thumbs_up_rate", "≥"), ("not_found_rate", "max_not_found_rate", "≤"),
                 ("block_rate", "max_block_rate", "≤"), ("no_document_rate", "max_no_document_rate", "≤"),
                 ("score_psi", "max_score_psi", "≤"), ("score_ks", None, ""), ("score_ks_pvalue", "max_drift_pvalue", "<"),
                 ("latency_p50_ms", None, ""), ("latency_p95_ms", "max_latency_p95_ms", "≤"),
                 ("requests", None, ""), ("answered", "min_requests", "≥"), ("ratings", "min_feedback", "≥"),
                 ("clients", "min_clients", "≥"), ("rating_clients", "min_clients", "≥"), ("capped_clients", None, ""),
                 ("votes", None, ""), ("replaced_votes", None, ""), ("uncounted_votes", None, ""),
                 ("rejected", None, "")]


def table_rows(figures: dict[str, Any], rules: MonitorRules) -> list[dict[str, Any]]:
    """One row per figure with its limit (the table artifact)."""
    rows = []
    for key, rule, op in FIGURE_LIMITS:
        limit = getattr(rules, rule) if rule else None
        rows.append({"figure": key, "value": _fmt(figures.get(key)),
                     "limit": f"{op} {limit}" if limit is not None else "—"})
    return rows


def render_markdown(result: dict[str, Any], rules: MonitorRules, live: list[float], reference: list[float]) -> str:
    """The window's report: verdict, broken rules, figures with limits, and the support histogram."""
    f, reasons = result["figures"], result["reasons"]
    verdict = ("**DEGRADED**" if reasons else
               f"not judged (fewer than {rules.min_requests} answered requests)" if f["answered"] < rules.min_requests
               else f"not judged (fewer than {rules.min_clients} clients)" if f.get("clients", 0) < rules.min_clients
               else "healthy")
    lines = [f"# Monitor {result['window_start']} → {result['window_end']}", "", f"**Verdict:** {verdict}  ",
             f"**Requests:** {f['requests']}, answered {f['answered']}, ratings {f['ratings']}  ",
             f"**Clients:** {f.get('clients')} answered, {f.get('rating_clients')} voting, {f.get('capped_clients')} "
             f"capped at their share; {f.get('rejected')} requests refused before they were questions  ",
             f"**Support threshold:** {f['support_threshold']:.3f}"
             f" ({'calibrated' if result.get('calibrated') else 'default: no calibration, drift unknown'})", ""]
    if reasons:
        lines += ["## Broken rules", ""] + [f"- {r}" for r in reasons] + [""]
    if f.get("vote_bursts"):
        lines += ["## Vote bursts (flagged, not counted)", ""] + [
            f"- client `{c}`: {n} votes within one minute (limit {rules.max_votes_per_minute})"
            for c, n in sorted(f["vote_bursts"].items())] + [""]
    lines += ["| figure | value | limit |", "|---|---:|---|"]
    lines += [f"| {r['figure']} | {r['value']} | {r['limit']} |" for r in table_rows(f, rules)]
    lines += ["", "## Retrieval support: live vs evaluation split (share per bin)", "", "```",
              text_histogram(live, reference), "```", ""]
    if result.get("chart"):
        lines.append(f"**Chart:** `{result['chart']}`  ")
    lines.append(f"**Report:** `{result['report']}`")
    return "\n".join(lines)


def save_chart(path: Path, live: list[float], reference: list[float], threshold: float) -> Path | None:
    """A PNG of the live and reference support distributions with the threshold; None without scores."""
    if not live and not reference:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = np.linspace(min([*live, *reference, 0.0]), max([*live, *reference, 1.0]), 21)
    if reference:
        ax.hist(reference, bins=bins, density=True, alpha=0.5, label=f"evaluation split ({len(reference)})")
    if live:
        ax.hist(live, bins=bins, density=True, alpha=0.5, label=f"live window ({len(live)})")
    ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label=f"threshold {threshold:.2f}")
    ax.set_xlabel("support (cosine of question and closest passage)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def stamp(at: datetime) -> str:
    return at.strftime("%Y%m%dT%H%M%SZ")


def compute_window(ws: Workspace, config: MonitorConfig, end: datetime) -> dict[str, Any]:
    """Figures and broken rules of the window ending at `end` (UTC); writes `reports/monitor/<stamp>.json`, the
    chart next to it, and returns the result with the markdown report."""
    start = end - timedelta(hours=config.window_hours)
    requests = read_records(ws, REQUESTS, start, end)
    feedback = read_records(ws, FEEDBACK, start, end)
    cal = load_calibration(ws)
    figures = window_figures(requests, feedback, cal["threshold"], cal["reference_scores"], config.rules)
    live = [float(r["support"]) for r in quality_sample(requests, config.rules)[0]
            if r.get("status") == 200 and r.get("support") is not None]
    out_dir = ws.reports / "monitor"
    chart = save_chart(out_dir / f"{stamp(end)}.png", live, cal["reference_scores"], cal["threshold"])
    result = {"window_start": start.isoformat().replace("+00:00", "Z"),
              "window_end": end.isoformat().replace("+00:00", "Z"), "calibrated": cal["calibrated"],
              "figures": figures, "reasons": broken_rules(figures, config.rules),
              "rules": config.rules.model_dump(), "report": str(out_dir / f"{stamp(end)}.json"),
              "chart": str(chart) if chart else None}
    result["degraded"] = bool(result["reasons"])
    result["markdown"] = render_markdown(result, config.rules, live, cal["reference_scores"])
    atomic_write_json(Path(result["report"]), {k: v for k, v in result.items() if k != "markdown"})
    return result


def merge_quality_reasons(decision: dict[str, Any], quality_event: dict[str, Any]) -> dict[str, Any]:
    """The retraining decision for a `ragtune.quality.degraded` event: retrain, with the event's reasons first
    and the policy's own after; only when there are no documents to train on does the policy's "no" stand."""
    reasons = [f"quality degraded: {r}" for r in quality_event.get("reasons") or []] or ["quality degraded"]
    numbers = {**decision.get("numbers", {}), "quality_window_end": quality_event.get("window_end")}
    can_train = decision.get("numbers", {}).get("latest_documents") is not None or decision["retrain"]
    return {**decision, "retrain": bool(can_train), "reasons": reasons + list(decision["reasons"]),
            "numbers": numbers}
