"""RAG, fine-tuning or both? The answer with the user's own data.

Entry: `compare(ws, CompareConfig)` (`run`), the flow `flows/compare.py` and `ragtune compare`. The base model
and a fine-tuned run answer the SFT test split closed-book, with retrieval and (when a reranker is set) with
reranked retrieval, with the same greedy decoding:

- `matrix`: prompts per mode, one model load for every cell, metric tables, cost, paired bootstrap pairs;
- `verdict`: the one-sentence answer backed by the intervals;
- `report`: the terminal table, the Prefect markdown, the chart and the HTML page;
- `run`: reuse by content id and publishing (examples first, metrics last).

Failure attribution (`tasks.evaluate.attribution`) is shared with `evaluate`."""
