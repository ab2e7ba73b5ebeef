"""The comparison as a table (terminal, Prefect markdown and table artifacts), one chart and an HTML page with the
verdict, the cost side, the failure shares per system and examples of each failure kind."""

from __future__ import annotations

import re
from html import escape
from typing import Any

import numpy as np

from tasks.evaluate.attribution import ADVICE, KINDS, LABELS
from tasks.evaluate.compare.verdict import LABELS as METRIC_LABELS
from tasks.evaluate.report import CSS, METRICS, png

MODE_ORDER = ("closed", "rag", "rerank")
SHORT = {"verbose": "verbose", "reader": "reader", "retrieval_chunk": "chunk miss",
         "retrieval_document": "doc miss", "closed_book": "closed-book"}


def _num(v: Any, p: str = "{:.3f}") -> str:
    return "—" if v is None else p.format(v)


def cell_label(data: dict[str, Any], key: str) -> str:
    """`v3, retrieval + rerank`: the system's name and its context mode."""
    model, mode = key.split("/")
    return (f"{data['tuned']['label'] if model == 'tuned' else 'base'}, "
            + {"closed": "closed-book", "rag": "retrieval", "rerank": "retrieval + rerank"}[mode])


def ordered_cells(data: dict[str, Any]) -> list[str]:
    cells = data["cells"]
    return [f"{m}/{mode}" for mode in MODE_ORDER for m in ("base", "tuned") if f"{m}/{mode}" in cells]


def matrix_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per cell: the metric, its difference from base closed-book with the interval, cost, failures."""
    metric = data["metric"]
    rows = []
    for key in ordered_cells(data):
        c = data["cells"][key]
        comp = (data["comparisons"].get(f"{key} vs base/closed") or {}).get(metric) or {}
        f = c["failures"]
        rows.append({"cell": key, "system": data["tuned"]["label"] if c["model"] == "tuned" else "base",
                     "mode": c["mode"], metric: c["metrics"].get(metric),
                     "exact_match": c["metrics"].get("exact_match"),
                     "diff": comp.get("diff"), "ci_low": comp.get("ci_low"), "ci_high": comp.get("ci_high"),
                     "prompt_tokens": c["cost"]["prompt_tokens"], "seconds_per_answer": c["cost"]["seconds_per_answer"],
                     "wrong": f["wrong"], **{f"share_{k}": f["shares"][k] for k in KINDS}})
    return rows


def text_table(data: dict[str, Any]) -> list[str]:
    """The matrix as terminal lines."""
    metric = data["metric"]
    name = METRIC_LABELS.get(metric, metric)
    lines = [f"  {'system':<18}{'context':<20}{name:>9}  {'vs base closed-book':<28}{'tokens':>7}{'s/answer':>9}"
             f"  wrong: " + " / ".join(SHORT[k] for k in KINDS)]
    for r in matrix_rows(data):
        ci = ("" if r["diff"] is None else f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]")
        mode = {"closed": "closed-book", "rag": "retrieval", "rerank": "retrieval+rerank"}[r["mode"]]
        fails = " / ".join(f"{r[f'share_{k}']:.0%}" for k in KINDS)
        lines.append(f"  {r['system'][:17]:<18}{mode:<20}{_num(r[metric]):>9}  {ci:<28}{r['prompt_tokens']:>7.0f}"
                     f"{r['seconds_per_answer']:>9.2f}  {r['wrong']:>3} wrong: {fails}")
    return lines


def cost_line(data: dict[str, Any]) -> str:
    t = data["tuned"]
    size = t.get("adapter_bytes")
    runtime = t.get("train_runtime_s")
    return (f"fine-tuning cost: {_num(runtime, '{:.0f}')} s of training ({t.get('steps')} steps on {t.get('device')}, "
            f"{t.get('quantization') or 'no quantisation'}), adapter {_num(size and size / 1e6, '{:.1f}')} MB")


def markdown(data: dict[str, Any]) -> str:
    """The Prefect markdown artifact: verdict, matrix, cost and the failure shares."""
    metric = data["metric"]
    lines = [f"# RAG, fine-tuning or both? `{data['compare_id']}`", "", f"**{data['verdict']}**", "",
             f"| system | context | {METRIC_LABELS.get(metric, metric)} | vs base closed-book | prompt tokens | "
             "s/answer | wrong | " + " | ".join(SHORT[k] for k in KINDS) + " |",
             "|---|---|---:|---|---:|---:|---:|" + "---:|" * len(KINDS)]
    for r in matrix_rows(data):
        ci = "" if r["diff"] is None else f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
        lines.append(f"| {r['system']} | {r['mode']} | {_num(r[metric])} | {ci} | {r['prompt_tokens']:.0f} | "
                     f"{r['seconds_per_answer']:.2f} | {r['wrong']} | "
                     + " | ".join(f"{r[f'share_{k}']:.0%}" for k in KINDS) + " |")
    lines += ["", cost_line(data), "", f"**Report:** `{data['report']}`"]
    return "\n".join(lines)


def chart(data: dict[str, Any]) -> str:
    """Grouped bars of the metric per context mode (base vs fine-tuned), each labelled with its difference from
    base closed-book and the interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = data["metric"]
    modes = [m for m in MODE_ORDER if any(f"{s}/{m}" in data["cells"] for s in ("base", "tuned"))]
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    x = np.arange(len(modes))
    for j, (system, color) in enumerate((("base", "#9aa5b1"), ("tuned", "#2f7d4a"))):
        vals = [(data["cells"].get(f"{system}/{m}") or {}).get("metrics", {}).get(metric) or 0 for m in modes]
        bars = ax.bar(x + (j - 0.5) * 0.38, vals, 0.38, color=color,
                      label="base" if system == "base" else data["tuned"]["label"])
        for m, b in zip(modes, bars, strict=True):
            c = (data["comparisons"].get(f"{system}/{m} vs base/closed") or {}).get(metric)
            if c and c.get("diff") is not None:
                ax.annotate(f"{c['diff']:+.2f}\n[{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]",
                            (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [{"closed": "closed-book", "rag": "retrieval", "rerank": "retrieval + rerank"}[m]
                      for m in modes])
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    top = max([(c.get("metrics") or {}).get(metric) or 0 for c in data["cells"].values()] + [0.1])
    ax.set_ylim(0, top * 1.35)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return png(fig)


def highlight(text: str, phrase: str) -> str:
    """HTML-escaped text with each case-insensitive occurrence of the phrase marked."""

    if not phrase.strip():
        return escape(text)
    pieces = re.split(f"({re.escape(phrase.strip())})", text, flags=re.IGNORECASE)
    return "".join(f"<mark>{escape(x)}</mark>" if i % 2 else escape(x) for i, x in enumerate(pieces))


EFFECTS = {"retrieval": "retrieval (base: with retrieval − closed-book)",
           "fine_tuning_with_retrieval": "fine-tuning on top of retrieval (fine-tuned − base, both with retrieval)",
           "fine_tuning_alone": "fine-tuning alone (fine-tuned − base, both closed-book)",
           "rerank": "reranking (fine-tuned: reranked − plain retrieval)"}


def _examples(examples: list[dict[str, Any]], key: str, kind: str, n: int, mode: str) -> list[str]:
    out = []
    for ex in examples:
        if len(out) >= n:
            break
        if (ex.get(key) or {}).get("failure") != kind:
            continue
        out.append(f"<tr><td>{escape(ex['question'])}</td><td>{escape(ex['reference'])}</td>"
                   f"<td>{escape(ex[key]['answer'])}</td><td class='muted'>"
                   f"{highlight(ex.get(f'context_{mode}') or '—', ex['reference'])}</td></tr>")
    return out


def render_html(data: dict[str, Any], examples: list[dict[str, Any]]) -> str:
    """The whole comparison page from its metrics.json and examples."""
    cells = ordered_cells(data)
    label = lambda k: cell_label(data, k)  # noqa: E731
    conf = data["config"]["confidence"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>ragtune comparison {escape(data['compare_id'])}"
             f"</title><style>{CSS}</style></head><body><h1>RAG, fine-tuning or both?</h1>",
             f"<p class='muted'>comparison <code>{escape(data['compare_id'])}</code> · fine-tuned "
             f"<code>{escape(data['tuned']['label'])}</code> (run <code>{escape(data['tuned']['run_id'])}</code>) on "
             f"{escape(data['tuned']['base_model'])} · {data['examples']} {escape(data['split'])} questions · index "
             f"<code>{escape(str(data['index_version']))}</code> · {escape(data['created_at'])}</p>",
             f"<p><b>{escape(data['verdict'])}</b></p>", f"<img alt='comparison chart' src='{chart(data)}'>",
             f"<h2>Matrix ({conf:.0%} paired bootstrap intervals against base, closed-book)</h2>"
             "<table><tr><th>metric</th>" + "".join(f"<th>{escape(label(k))}</th>" for k in cells) + "</tr>"]
    for m, name, p in METRICS:
        if not any(m in data["cells"][k]["metrics"] for k in cells):
            continue
        row = []
        for k in cells:
            c = (data["comparisons"].get(f"{k} vs base/closed") or {}).get(m)
            ci = (f"<br><span class='muted'>{c['diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]</span>"
                  if c and c.get("diff") is not None and c.get("ci_low") is not None else "")
            row.append(f"<td class='n'>{_num(data['cells'][k]['metrics'].get(m), p)}{ci}</td>")
        parts.append(f"<tr><td>{name}</td>{''.join(row)}</tr>")
    parts.append("<tr><td>prompt tokens (mean)</td>" + "".join(
        f"<td class='n'>{data['cells'][k]['cost']['prompt_tokens']:.0f}</td>" for k in cells) + "</tr>")
    parts.append("<tr><td>seconds per answer (batched)</td>" + "".join(
        f"<td class='n'>{data['cells'][k]['cost']['seconds_per_answer']:.3f}</td>" for k in cells) + "</tr></table>")
    parts.append(f"<p>{escape(cost_line(data))}.</p>")
    effects = data.get("effects") or {}
    if effects:
        parts.append("<h2>Effects</h2><table><tr><th>effect</th><th>difference</th><th>interval</th></tr>")
        for name, c in sorted(effects.items(), key=lambda kv: list(EFFECTS).index(kv[0])):
            parts.append(f"<tr><td>{escape(EFFECTS.get(name, name))}</td><td class='n'>{c['diff']:+.3f}</td>"
                         f"<td class='n'>[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Where answers fail</h2><p class='muted'>Each wrong answer (not an exact match) gets one kind; "
                 "shares are of the wrong answers.</p><table><tr><th>kind</th>"
                 + "".join(f"<th>{escape(label(k))}</th>" for k in cells) + "<th>what to fix</th></tr>")
    for kind in KINDS:
        parts.append(f"<tr><td>{escape(LABELS[kind])}</td>" + "".join(
            f"<td class='n'>{data['cells'][k]['failures']['counts'][kind]} "
            f"({data['cells'][k]['failures']['shares'][kind]:.0%})</td>" for k in cells)
            + f"<td>{escape(ADVICE[kind])}</td></tr>")
    parts.append("<tr><td>wrong answers</td>" + "".join(
        f"<td class='n'>{data['cells'][k]['failures']['wrong']} of {data['cells'][k]['failures']['answers']}</td>"
        for k in cells) + "<td></td></tr></table>")
    r = data.get("retrieval") or {}
    if r:
        keys = [k for k in next(iter(r.values())) if k.startswith(("recall@", "mrr@", "ndcg@"))]
        parts.append(f"<h2>Retrieval</h2><p class='muted'>the prompt holds the top {data.get('context_k')} passages"
                     "</p><table><tr><th>mode</th>" + "".join(f"<th>{k}</th>" for k in keys) + "</tr>")
        parts += [f"<tr><td>{escape(mode)}</td>" + "".join(f"<td class='n'>{_num(v.get(k))}</td>" for k in keys)
                  + "</tr>" for mode, v in r.items()]
        parts.append("</table>")
    n = data["config"].get("report_examples", 3)
    shown = "tuned/rerank" if "tuned/rerank" in data["cells"] else "tuned/rag"
    if n and shown in data["cells"]:
        mode = shown.split("/")[1]
        parts.append(f"<h2>Examples of each failure ({escape(label(shown))})</h2>")
        for kind in KINDS:
            rows = _examples(examples, shown, kind, n, mode)
            if rows:
                parts.append(f"<h3>{escape(LABELS[kind])}</h3><table><tr><th>question</th><th>reference</th>"
                             f"<th>answer</th><th>passages in the prompt</th></tr>{''.join(rows)}</table>")
    parts.append(f"<p class='muted'>per-example outputs: <code>{escape(data['path'])}/examples.jsonl</code> · git "
                 f"{escape(str(data.get('git_commit')))} · {data.get('seconds', 0):.0f} s</p></body></html>")
    return "\n".join(parts)
