"""Does a candidate adapter beat the champion? Measured, gated, promoted, explained.

- `metrics` (exact match, token F1, ROUGE-L, BLEU, perplexity, paired bootstrap) and `textmetrics` (METEOR,
  BERTScore); `judge` (optional LLM-as-judge), `safety` (blocklist), `attribution` (why a wrong answer failed).
- `evaluate` answers the test split with base, champion and candidate; `gate` applies the declarative rules;
  `promote` moves the registry's aliases on the decision; `report` writes the HTML report and its charts.
- `compare/`: RAG, fine-tuning or both — the matrix of systems and contexts, the verdict and its report.
- `config`: EvalConfig, JudgeConfig, GateConfig, CompareConfig."""
