"""What the command line prints for a person (with `--json` nothing here runs): one `print_*` per result, shared by
the commands and the demo."""

from __future__ import annotations

import re
from typing import Any

from tasks.evaluate.attribution import ADVICE, dominant
from tasks.evaluate.compare.report import cell_label, cost_line, text_table
from tasks.index.search import location
from tasks.index.verify import describe_check


def fmt(value: float | None, pattern: str = "{:.3f}", missing: str = "—") -> str:
    return missing if value is None else pattern.format(value)


def where(hit: dict[str, Any]) -> str:
    """`Title > section` of a hit or a source."""
    return location(hit)


def print_ingest(out: dict[str, Any]) -> None:
    c = out["counts"]
    print(f"dataset version {out['dataset_version']}{' (unchanged, reused)' if out['reused'] else ''}")
    print(f"  units seen {c['seen']}: accepted {c['accepted']}, duplicate {c['duplicate']}, "
          f"filtered {c['filtered']}, quarantined {c['quarantined']}")
    if out.get("changes"):
        print("  changes: " + ", ".join(f"{k} {v}" for k, v in out["changes"].items()))
    for r in out.get("top_reasons", [])[:8]:
        print(f"  {r['fate']:<11} {r['count']:>4}  {r.get('example') or r['reason']}")
    if out.get("pii_redactions"):
        print("  PII redacted: " + ", ".join(f"{k} {v}" for k, v in out["pii_redactions"].items()))
    print(f"  records:    {out['dataset_dir']}/records.parquet")
    print(f"  manifest:   {out['manifest']}")
    if out.get("data_docs"):
        print(f"  data docs:  {out['data_docs']}")
    if out.get("quarantine_dir"):
        print(f"  quarantine: {out['quarantine_dir']}")
    for w in out.get("warnings", []):  # last, where the eye lands
        print(w)


def print_index(out: dict[str, Any]) -> None:
    print(f"index {out['name']} -> {out['collection']} ({out['mode']})")
    print(f"  dataset version {out['dataset_version']}: {out['chunks']} chunks, {out['points']} points")
    if out["changes"]:
        ch = out["changes"]
        print(f"  {ch['added']} added, {ch['changed']} changed, {ch['removed']} removed documents; "
              f"{ch['chunks_embedded']} chunks embedded")
    if out["check"]:
        print(f"  {describe_check(out['check'])}")
    if out["timings"]:
        print("  " + ", ".join(f"{k} {v:.1f}s" for k, v in out["timings"].items() if k != "embed_parts"))


def print_hits(out: dict[str, Any]) -> None:
    reranked = "rerank" in out
    for i, h in enumerate(out["hits"], 1):
        score = (f"rerank {h['rerank_score']:.3f}, {out['mode']} {h['score']:.3f}" if reranked else f"{h['score']:.3f}")
        print(f"{i:>2}. [{score}] {where(h)}")
        print(f"    {h['source_uri']}  ({h['doc_id']}#chunk-{h['chunk_index']})")
        print(f"    {' '.join(h['text'].split())[:200]}")


def print_retrieval_eval(out: dict[str, Any], res: dict[str, Any]) -> None:
    m = res["modes"][out["mode"]]
    print(f"{out['mode']}: nDCG@10 {m['ndcg@10']:.4f}  recall@10 {m['recall@10']:.4f}  recall@100 "
          f"{m['recall@100']:.4f}  MRR@10 {m['mrr@10']:.4f}  ({m['queries']} queries, {res['documents']} "
          f"documents, {res['chunks']} chunks, {m['ms_per_query']:.1f} ms/query)")


def print_train(res: dict[str, Any]) -> None:
    state = "trained" if res["trained"] else "finished before, not trained again"
    print(f"training run {res['run_id']} ({state})")
    print(f"  {res['steps']} steps on {res['device']} ({'4-bit NF4 QLoRA' if res['quantized'] else 'LoRA'}); "
          f"train loss {fmt(res['train_loss'], '{:.4f}')}, validation loss {fmt(res['eval_loss'], '{:.4f}')}")
    print(f"  SFT dataset version {res['dataset_version']}")
    print(f"  adapter: {res['adapter_dir']}")


def print_evaluation(res: dict[str, Any]) -> None:
    d = res["decision"]
    print(f"evaluation {res['eval_id']}{' (reused)' if res['reused'] else ''}: candidate {res['candidate_version']} "
          f"(run {res['candidate']}) vs {res['reference']}{' ' + res['champion'] if res.get('champion') else ''}, "
          f"{res['examples']} questions")
    systems = list(res["metrics"])
    print(f"  {'':<14}" + "".join(f"{s:>12}" for s in systems))
    for m, p in (("token_f1", "{:.3f}"), ("exact_match", "{:.3f}"), ("rouge_l", "{:.3f}"), ("meteor", "{:.3f}"),
                 ("bertscore", "{:.3f}"), ("bleu", "{:.1f}"), ("perplexity", "{:.2f}"), ("unsafe", "{:.0f}")):
        if any(m in res["metrics"][s] for s in systems):
            print(f"  {m:<14}" + "".join(f"{fmt(res['metrics'][s].get(m), p):>12}" for s in systems))
    for s, f in (res.get("failures") or {}).items():
        if f["wrong"]:
            print(f"  {s} wrong {f['wrong']}/{f['answers']}: " + ", ".join(
                f"{k.replace('_', ' ')} {v:.0%}" for k, v in f["shares"].items() if v))
    for ref, comp in res["comparisons"].items():
        c = comp.get(d["primary_metric"], {})
        print(f"  {d['primary_metric']} candidate − {ref}: {fmt(c.get('diff'), '{:+.3f}')} "
              f"[{fmt(c.get('ci_low'), '{:+.3f}')}, {fmt(c.get('ci_high'), '{:+.3f}')}]")
    r = res.get("retrieval") or {}
    if r.get("questions"):
        print("  retrieval: " + ", ".join(f"{k} {r[k]:.3f}" for k in r if k.startswith(("recall@", "mrr@", "ndcg@"))))
    print(f"  gate: {'PASS' if d['passed'] else 'FAIL'} — " + "; ".join(d["reasons"]))
    print(f"  report: {res['report']}")


def print_promotion(out: dict[str, Any]) -> None:
    state = "promoted" if out["promoted"] else "not promoted"
    print(f"candidate {out['candidate']} (run {out['run_id']}) {state}; champion: {out['champion'] or 'none'}")
    for r in out["reasons"]:
        print(f"  {r}")
    print(f"  report: {out['report']}")


def print_comparison(res: dict[str, Any]) -> None:
    """The matrix, the cost of fine-tuning, the dominant failure and the verdict."""
    print(f"comparison {res['compare_id']}{' (reused)' if res['reused'] else ''}: base vs {res['tuned']['label']} "
          f"(run {res['tuned']['run_id']}), {res['examples']} {res['split']} questions")
    for line in text_table(res):
        print(line)
    print(f"  {cost_line(res)}")
    best = max(res["cells"], key=lambda k: res["cells"][k]["metrics"].get(res["metric"]) or 0)
    kind = dominant(res["cells"][best]["failures"])
    if kind:
        share = res["cells"][best]["failures"]["shares"][kind]
        print(f"  most wrong answers of the best system ({cell_label(res, best)}) are {kind.replace('_', ' ')} "
              f"({share:.0%}): look at {ADVICE[kind]}")
    print(f"  verdict: {res['verdict']}")
    print(f"  report: {res['report']}")


def print_models(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no model versions yet (run `ragtune train`, then `ragtune promote`)")
    for r in rows:
        print(f"{r['version']:<5} {r['alias']:<11} {r['run_id']:<32} {r['base_model']}")


def print_answer(out: dict[str, Any]) -> None:
    print(out["answer"])
    if out["sources"]:
        print("\nsources:")
        for s in out["sources"]:
            print(f"  [{s['n']}] {where(s)}  ({s['source_uri']})")
    print(f"\n{out['model']}, index {out['index_version']}{', cached' if out['cached'] else ''}, "
          f"{out['seconds']:.2f} s")


def print_calibration(out: dict[str, Any]) -> None:
    c, z = out["chosen"], out["no_threshold"]
    pct = lambda v: "—" if v is None else f"{v:.0%}"  # noqa: E731
    print(f"not-found threshold {out['threshold']:.3f} (cosine support of the closest passage), chosen on "
          f"{out['questions']} evaluation questions of {out['source']} and {out['off_topic']} off-topic questions")
    print(f"  {'':<22}{'answer rate':>12}{'answered right':>16}{'off-topic refused':>19}{'right decisions':>17}")
    for name, r in (("no threshold", z), (f"threshold {out['threshold']:.3f}", c)):
        print(f"  {name:<22}{pct(r['answer_rate']):>12}{pct(r['answered_accuracy']):>16}"
              f"{pct(r['off_topic_refused']):>19}{pct(r['accuracy']):>17}")
    print("  (answered right: the question's document was among the passages given to the model)")


def print_sweep(out: dict[str, Any]) -> None:
    m = out["metric"]
    print(f"sweep {out['sweep_id']} on dataset {out['dataset_version']}, ranked by {m}:")
    print(f"  {'rank':>4} {'size':>5} {'overlap':>7} {'mode':<7} {'chunks':>6} {m:>9} {'recall@1':>9}")
    for r in out["rows"]:
        print(f"  {r['rank']:>4} {r['chunk_size']:>5} {r['chunk_overlap']:>7} {r['mode']:<7} {r['chunks']:>6} "
              f"{r[m]:>9.4f} {r['recall@1']:>9.4f}")
    b = out["best"]
    print(f"best: chunk {b['chunk_size']}/{b['chunk_overlap']}, {b['mode']}"
          + (f"; applied to {out['applied']}" if out["applied"] else " (--apply makes it the index config)"))


def print_monitor(out: dict[str, Any]) -> None:
    f = out["figures"]
    print(f"monitor {out['window_start']} .. {out['window_end']}: {f['requests']} requests, "
          f"{f['answered']} answered, {f['ratings']} ratings")
    print(f"  thumbs-up {fmt(f['thumbs_up_rate'], missing='unknown')}  not-found "
          f"{fmt(f['not_found_rate'], missing='unknown')}  blocked {fmt(f['block_rate'], missing='unknown')}  "
          f"no-document {fmt(f['no_document_rate'], missing='unknown')} (support < {f['support_threshold']:.3f})")
    print(f"  latency p50 {fmt(f['latency_p50_ms'], '{:.0f}', 'unknown')} ms  p95 "
          f"{fmt(f['latency_p95_ms'], '{:.0f}', 'unknown')} ms  score PSI {fmt(f['score_psi'], missing='unknown')}  "
          f"KS {fmt(f['score_ks'], missing='unknown')} (p={fmt(f['score_ks_pvalue'], '{:.2g}', 'unknown')})")
    print(f"  clients {f.get('clients')} asking, {f.get('rating_clients')} voting ({f.get('capped_clients')} capped at "
          f"their share); votes counted {f.get('ratings')} of {f.get('votes')} ({f.get('replaced_votes')} replaced, "
          f"{f.get('uncounted_votes')} anonymous); {f.get('rejected')} requests refused before they were questions")
    for client, n in (f.get("vote_bursts") or {}).items():
        print(f"  FLAGGED: {printable(client)} sent {n} votes within a minute (not counted)")
    for r in out["reasons"]:
        print(f"  BROKEN: {r}")
    if out["degraded"]:
        print("  ragtune.quality.degraded " + ("emitted" if out["event"] else "not emitted"))
    else:
        print("  no rule broken")
    print(f"  report: {out['report']}")


def print_status(out: dict[str, Any]) -> None:
    print(f"workspace {out['workspace']}")
    print(f"  {out['dataset']} dataset: {out['dataset_version'] or 'none yet (run `ragtune ingest`)'}")
    if out["counts"]:
        print("  " + ", ".join(f"{k} {v}" for k, v in out["counts"].items()))
    if out["profiles"]:
        print("  cleaning profiles: " + ", ".join(f"{k} {v}" for k, v in out["profiles"].items()))
    for r in out["dropped"]:
        print(f"  {r['fate']:<11} {r['count']:>4}  {r.get('example') or r['reason']}")
    for w in out["warnings"]:
        print(f"  {w}")
    if out["dropped"]:
        print("  `ragtune fates --fate filtered` lists every dropped input with its reason")


def print_fates(out: dict[str, Any], fate: str | None) -> None:
    shown = out["fates"]
    for m in shown:
        print(f"{m['fate']:<11} {m['unit']}\n            {m['reason']}")
    more = f" (first {len(shown)} shown; --limit 0 shows all)" if len(shown) < out["matched"] else ""
    print(f"{out['matched']} of {out['total']} inputs match{more}; manifest {out['manifest']}")
    if fate in (None, "filtered") and any(m["fate"] == "filtered" for m in shown):
        print("rescue content filtered by a quality rule: `ragtune ingest --keep 'GLOB'` (or clean.keep in config)")


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(value: Any) -> str:
    """Text from users, safe for a terminal: control and bidirectional characters shown as escapes, never sent
    (an escape sequence in a correction must not recolour or rewrite the reviewer's screen)."""
    text = " ".join(str(value).split())
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def print_review_items(items: list[dict[str, Any]]) -> None:
    """Feedback review items: status, id, question, answer, reason (user text escaped)."""
    for it in items:
        print(f"{it['status']:<11} {printable(it['feedback_id'])}  request {printable(it['request_id'])}  "
              f"({printable(it['rating'])})")
        if it.get("question"):
            print(f"            Q: {printable(it['question'])[:160]}")
        if it.get("answer"):
            print(f"            A: {printable(it['answer'])[:160]}")
        if it.get("comment"):
            print(f"            comment: {printable(it['comment'])[:160]}")
        if it.get("reason"):
            print(f"            {printable(it['reason'])}")


def print_sample_titles(records: list[dict[str, Any]], n: int = 5) -> None:
    print(f"\n  {len(records)} documents, for example:")
    for r in records[:: max(1, len(records) // n)][:n]:
        print(f"    {r['doc_id']:<45} {r['title'][:60]}")


def print_demo(out: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """The demo's story, step by step: what each stage produced and what to run next."""
    print(f"ragtune demo — workspace {out['workspace']}\n")
    print("1. ingest (bundled sample corpus):")
    print_ingest(out["ingest"])
    print_sample_titles(records)
    ix = out["index"]
    print(f"\n2. index {ix['name']} -> {ix['collection']} ({ix['mode']}): {ix['chunks']} chunks; "
          f"{describe_check(ix['check'])}")
    for s in out["searches"]:
        print(f"\n  search ({s['mode']}): {s['query']}")
        for h in s["hits"]:
            print(f"    [{h['score']:.3f}] {where(h)}  ({h['doc_id']})")
    tr = out["train"]
    evals = [h["eval_loss"] for h in tr["history"] if h.get("eval_loss") is not None]
    print(f"\n3. train (QLoRA on the sample Q/A set, retrieved context in each prompt): run {tr['run_id']}"
          f"{'' if tr['trained'] else ' (finished before)'}")
    print(f"  {tr['steps']} steps on {tr['device']} ({'4-bit NF4' if tr['quantized'] else 'LoRA'}); validation loss "
          f"{fmt(evals[0] if evals else None)} -> {fmt(tr['eval_loss'])}")
    print(f"  adapter: {tr['adapter_dir']}")
    print("\n4. evaluate (test split, same retrieval as serving):")
    print_evaluation(out["evaluation"])
    print(f"\n5. promote: candidate {out['candidate']} {'promoted' if out['promoted'] else 'not promoted'}; "
          f"champion {out['champion'] or 'none'}")
    for r in out["reasons"]:
        print(f"  {r}")
    print(f"\nreport: {out['report']}")
    print("\n6. calibrate the server's 'not found in the documents' answer:")
    print_calibration(out["calibration"])
    print("\n7. compare: RAG, fine-tuning or both? (the same test questions, closed-book and with retrieval)")
    print_comparison(out["comparison"])
    print("\nnext: serve it and open the chat page")
    print("  ragtune serve                      # then open http://127.0.0.1:8000/ (API: /v1/ask, /v1/feedback, "
          "/metrics)")
    print('  curl -s localhost:8000/v1/ask -H "Content-Type: application/json" '
          '-d \'{"question": "How many days of paid annual leave do employees get?"}\'')
    print('  ragtune ask "How many days of paid annual leave do employees get?"   # one question, no server')


def print_question_set(out: dict[str, Any]) -> None:
    c = out["counts"]
    print(f"question set {out['version']}{' (unchanged, reused)' if out['reused'] else ''}"
          f"{' with ' + out['generator'] if out.get('generator') else ''}")
    print(f"  {c['seen']} candidates: accepted {c['accepted']}, duplicate {c['duplicate']}, set aside {c['filtered']}")
    print("  splits (by document): " + ", ".join(f"{k} {v}" for k, v in out["splits"].items()))
    for r in out["top_reasons"][:8]:
        print(f"  {r['fate']:<10} {r['count']:>5}  {r['reason']}")
    print(f"  pairs:    {out['path']}/pairs.jsonl")
    print(f"  manifest: {out['path']}/manifest.jsonl  (`ragtune questions list --status set_aside` to review)")


def print_question_items(out: dict[str, Any]) -> None:
    for m in out["items"]:
        print(f"{m['status']:<10} {m['pair_id']}  [{m['kind']}] {m['doc_id']}" + (f"  ({m['split']})" if m.get("split")
                                                                                  else ""))
        print(f"           Q: {' '.join(str(m['question']).split())[:160]}")
        print(f"           A: {' '.join(str(m['answer']).split())[:160]}")
        if m["status"] != "accepted" or (m.get("reason") or "ok") != "ok":
            print(f"           {m['reason']}")
    shown = len(out["items"])
    more = f" (first {shown} shown; --limit 0 shows all)" if shown < out["matched"] else ""
    print(f"{out['matched']} of {out['total']} pairs match{more}; question set {out['version']}; "
          + ", ".join(f"{k} {v}" for k, v in sorted(out["counts"].items())))
