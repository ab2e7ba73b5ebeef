"""Training and evaluation data from the user's own corpus: question/answer pairs generated from the indexed
chunks, each citing its document and chunk, checked, split by document and versioned like a dataset.

- `structure`: pairs from what knowledge bases are made of (FAQ entries, headings, definitions, table rows,
  changelog entries, key/value settings), answers being spans of the text; no model needed.
- `generator`: optional pairs from a local causal LM or an OpenAI-compatible endpoint.
- `filters`: the checks (length, support by the chunk, no quoted answer, near duplicates, the round trip through
  the served retriever), each with its reason.
- `build`: candidates → checks → reviews → document splits → a published question set (`datasets/questions/`).
- `review`: `ragtune questions list|accept|reject` decisions, kept by pair id across regenerations."""
