"""Dataset versions to a verified, served Qdrant collection, and retrieval over it.

- `chunk` (token-aware splitting), `embed` (sentence-transformers), `sparse` (BM25 weights) feed `build`, which
  builds or incrementally updates a collection; `verify` checks it before the alias moves; `served` is the one
  way to find the served collection and the config it was built with.
- `qdrant` opens a Qdrant server or the embedded engine (`edge`); `search` (dense, sparse, hybrid) and `rerank`
  (cross-encoder) answer queries; `sweep` scores chunking settings; `retrieval_eval` scores BEIR-format sets.
- `config`: IndexConfig, RerankConfig, SweepConfig."""
