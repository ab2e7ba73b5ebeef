"""ragtune's work as plain functions, one package per stage; a stage imports only the stages below it:

    core < ingest < index < train < evaluate < serve

- `core`: the workspace on disk, records and fates, provenance, and the one layering of configuration.
- `ingest`: sources to a validated, versioned document dataset (collect, formats, clean, filters, validate, publish).
- `index`: chunks, embeddings and sparse vectors in Qdrant; search, reranking, the served alias, sweeps.
- `train`: prompts, the SFT dataset, QLoRA training, generation, the model registry, the retraining policy.
- `evaluate`: answer and retrieval metrics, the gate, promotion, reports, and the RAG / fine-tuning comparison.
- `serve`: `ragtune ask`, the HTTP server, guardrails, the request log, monitoring and feedback.

Nothing here imports Prefect: the `@task` wrappers, artifacts, events, locks and task runners live in `flows/`.
Project modules are imported at module top. Heavy or optional libraries (torch, transformers, peft, trl,
bitsandbytes, sentence-transformers, qdrant-client, Great Expectations, pandas, pyarrow, matplotlib, the Office and
PDF parsers) are imported inside the functions that use them, so that importing a stage, and `ragtune --help`,
does not load a deep-learning stack it may never use."""

from tasks.core.offline import keep_kernels_offline

keep_kernels_offline()  # before any stage imports transformers: no Hub kernels on a worker without network
