"""The evaluation report: one self-contained HTML page (metrics table, gate decision, confidence intervals,
retrieval, loss curve and metric chart as embedded PNGs, answers side by side) and its Prefect markdown twin."""

from __future__ import annotations

import base64
import io
from html import escape
from typing import Any

import numpy as np

from tasks.evaluate.attribution import ADVICE, KINDS, LABELS

METRICS = [("token_f1", "token F1", "{:.3f}"), ("exact_match", "exact match", "{:.3f}"),
           ("rouge_l", "ROUGE-L", "{:.3f}"), ("meteor", "METEOR", "{:.3f}"), ("bertscore", "BERTScore F1", "{:.3f}"),
           ("bleu", "BLEU", "{:.1f}"), ("perplexity", "perplexity", "{:.2f}"),
           ("answer_chars", "answer length (chars)", "{:.0f}"), ("unsafe", "unsafe answers", "{:.0f}")]
CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.6em 0 1.4em}td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}.pass{color:#0a7d28;font-weight:600}
.fail{color:#b3261e;font-weight:600}.muted{color:#666}img{max-width:100%}code{background:#f5f5f5;padding:0 .2em}"""


def _fmt(value: Any, pattern: str) -> str:
    return "—" if value is None else pattern.format(value)


def png(fig: Any) -> str:
    """A matplotlib figure as a base64 PNG data URI (for self-contained HTML reports); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def loss_chart(history: list[dict[str, Any]]) -> str | None:
    """Training and validation loss per step of the candidate's run."""
    train = [(h["step"], h["loss"]) for h in history if h.get("loss") is not None]
    val = [(h["step"], h["eval_loss"]) for h in history if h.get("eval_loss") is not None]
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="#4a7bd0")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation loss", color="#d0704a")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return png(fig)


def metric_chart(metrics: dict[str, dict[str, float]]) -> str:
    """Grouped bars of the answer metrics (BLEU scaled to 0-1) per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [("token_f1", "token F1"), ("exact_match", "EM"), ("rouge_l", "ROUGE-L"), ("bleu", "BLEU/100")]
    systems = list(metrics)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(len(names))
    width = 0.8 / max(len(systems), 1)
    colors = {"base": "#9aa5b1", "champion": "#e0a030", "candidate": "#2f7d4a"}
    for i, s in enumerate(systems):
        vals = [(metrics[s].get(m) or 0) / (100 if m == "bleu" else 1) for m, _ in names]
        ax.bar(x + (i - (len(systems) - 1) / 2) * width, vals, width, label=s, color=colors.get(s))
    ax.set_xticks(x, [label for _, label in names])
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return png(fig)


def _metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    systems = list(metrics)
    head = "".join(f"<th>{escape(s)}</th>" for s in systems)
    rows = "".join(f"<tr><td>{label}</td>" + "".join(f'<td class="n">{_fmt(metrics[s].get(m), p)}</td>' for s in systems)
                   + "</tr>" for m, label, p in METRICS if any(m in metrics[s] for s in systems))
    return f"<table><tr><th>metric</th>{head}</tr>{rows}</table>"


def _comparison_table(name: str, comp: dict[str, dict[str, float]]) -> str:
    rows = "".join(f"<tr><td>{label}</td><td class='n'>{_fmt(c.get('candidate'), p)}</td>"
                   f"<td class='n'>{_fmt(c.get('reference'), p)}</td><td class='n'>{_fmt(c.get('diff'), '{:+.4f}')}</td>"
                   f"<td class='n'>[{_fmt(c.get('ci_low'), '{:+.4f}')}, {_fmt(c.get('ci_high'), '{:+.4f}')}]</td>"
                   f"<td class='n'>{_fmt(c.get('p_not_better'), '{:.3f}')}</td></tr>"
                   for m, label, p in METRICS if (c := comp.get(m)))
    return (f"<h3>candidate − {escape(name)}</h3><table><tr><th>metric</th><th>candidate</th><th>{escape(name)}</th>"
            f"<th>difference</th><th>interval</th><th>P(not better)</th></tr>{rows}</table>")


def failure_table(failures: dict[str, dict[str, Any]]) -> str:
    """Where each system's wrong answers failed (see tasks/evaluate/attribution.py), with what to fix."""
    systems = list(failures)
    rows = "".join(f"<tr><td>{escape(LABELS[k])}</td>" + "".join(
        f"<td class='n'>{failures[s]['counts'][k]} ({failures[s]['shares'][k]:.0%})</td>" for s in systems)
        + f"<td>{escape(ADVICE[k])}</td></tr>" for k in KINDS if any(failures[s]["counts"][k] for s in systems))
    total = "".join(f"<td class='n'>{failures[s]['wrong']} of {failures[s]['answers']}</td>" for s in systems)
    return ("<h2>Where answers fail</h2><p class='muted'>Each wrong answer (not an exact match) gets one kind; "
            "shares are of the wrong answers.</p><table><tr><th>kind</th>"
            + "".join(f"<th>{escape(s)}</th>" for s in systems) + f"<th>what to fix</th></tr>{rows}"
            f"<tr><td>wrong answers</td>{total}<td></td></tr></table>")


def render_evaluation(data: dict[str, Any], examples: list[dict[str, Any]]) -> str:
    """The whole report page from an evaluation's metrics.json and examples."""
    d = data["decision"]
    verdict = '<span class="pass">PASS</span>' if d["passed"] else '<span class="fail">FAIL</span>'
    conf = data.get("config", {}).get("confidence", 0.95)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>ragtune evaluation {escape(data['eval_id'])}"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>Evaluation <code>{escape(data['eval_id'])}</code></h1>",
             f"<p>Candidate <code>{escape(data['candidate_version'])}</code> (run <code>{escape(data['candidate'])}</code>)"
             f" against the {escape(data['reference'])}"
             + (f" <code>{escape(data['champion'])}</code>" if data.get("champion") else "")
             + f" on {data['examples']} test questions · {escape(data.get('created_at', ''))}</p>",
             f"<h2>Gate: {verdict}</h2><table><tr><th>rule</th><th>result</th><th>detail</th></tr>"]
    parts += [f"<tr><td>{escape(r['rule'])}</td><td class='{'pass' if r['passed'] else 'fail'}'>"
              f"{'pass' if r['passed'] else 'fail'}</td><td>{escape(r['detail'])}</td></tr>" for r in d["rules"]]
    parts.append("</table><h2>Answer metrics</h2>" + _metrics_table(data["metrics"]))
    parts.append(f"<img alt='metric comparison' src='{metric_chart(data['metrics'])}'>")
    parts.append(f"<h2>Paired bootstrap ({conf:.0%} intervals, "
                 f"{data.get('config', {}).get('bootstrap_samples', '')} resamples)</h2>")
    parts += [_comparison_table(name, comp) for name, comp in data["comparisons"].items()]
    r = data.get("retrieval") or {}
    if r.get("questions"):
        keys = [k for k in r if k.startswith(("recall@", "mrr@", "ndcg@"))]
        parts.append(f"<h2>Retrieval on the same questions</h2><p class='muted'>index "
                     f"<code>{escape(str(r.get('index_version')))}</code>; the prompt holds the top "
                     f"{r.get('k_in_prompt')} passages</p><table><tr>" + "".join(f"<th>{k}</th>" for k in keys)
                     + "<th>questions</th></tr><tr>" + "".join(f"<td class='n'>{r[k]:.3f}</td>" for k in keys)
                     + f"<td class='n'>{r['questions']}</td></tr></table>")
    if data.get("failures"):
        parts.append(failure_table(data["failures"]))
    j = data.get("judge")
    if j:
        parts.append(f"<h2>LLM judge</h2><p>{escape(str(j.get('model')))} against the {escape(j['against'])}: candidate "
                     f"wins {j['candidate_wins']}, loses {j['reference_wins']}, ties {j['ties']} of {j['pairs']} "
                     f"(both orders agree on {_fmt(j['position_consistency'], '{:.0%}')}; the longer answer wins "
                     f"{_fmt(j['longer_answer_wins'], '{:.0%}')} of decided pairs of unequal length)</p>")
    loss = loss_chart((data.get("candidate_run") or {}).get("history") or [])
    if loss:
        parts.append(f"<h2>Candidate training</h2><img alt='loss curve' src='{loss}'>")
    shown = examples[: (data.get("config") or {}).get("report_examples", 12)]
    if shown:
        systems = [s for s in ("base", "champion", "candidate") if f"answer_{s}" in shown[0]]
        parts.append("<h2>Answers side by side</h2><table><tr><th>question</th><th>reference</th>"
                     + "".join(f"<th>{s}</th>" for s in systems) + "</tr>")
        for ex in shown:
            cells = "".join(f"<td>{escape(ex[f'answer_{s}'])}<br><span class='muted'>F1 {ex[f'token_f1_{s}']:.2f}"
                            f"</span></td>" for s in systems)
            parts.append(f"<tr><td>{escape(ex['question'])}</td><td>{escape(ex['reference'])}</td>{cells}</tr>")
        parts.append("</table>")
    parts.append(f"<p class='muted'>git {escape(str(data.get('git_commit')))} · per-example outputs: "
                 f"<code>{escape(data['path'])}/examples.parquet</code></p></body></html>")
    return "\n".join(parts)


def evaluation_markdown(data: dict[str, Any]) -> str:
    """The same summary as Prefect markdown: decision, metrics per system and the gate's rules."""
    d = data["decision"]
    systems = list(data["metrics"])
    lines = [f"# Evaluation `{data['eval_id']}`: {'PASS' if d['passed'] else 'FAIL'}", "",
             f"Candidate `{data['candidate_version']}` (run `{data['candidate']}`) vs the {data['reference']} on "
             f"{data['examples']} questions.", "", "| metric | " + " | ".join(systems) + " |",
             "|---|" + "---:|" * len(systems)]
    for m, label, p in METRICS:
        if any(m in data["metrics"][s] for s in systems):
            lines.append(f"| {label} | " + " | ".join(_fmt(data["metrics"][s].get(m), p) for s in systems) + " |")
    lines += ["", "| rule | result | detail |", "|---|---|---|"]
    lines += [f"| {r['rule']} | {'pass' if r['passed'] else 'FAIL'} | {r['detail']} |" for r in d["rules"]]
    failures = data.get("failures") or {}
    if failures:
        lines += ["", "| wrong answers | " + " | ".join(k.replace("_", " ") for k in KINDS) + " |",
                  "|---|" + "---:|" * len(KINDS)]
        lines += [f"| {s}: {f['wrong']} of {f['answers']} | " + " | ".join(f"{f['shares'][k]:.0%}" for k in KINDS)
                  + " |" for s, f in failures.items()]
    lines += ["", f"**Report:** `{data['report']}`"]
    return "\n".join(lines)
