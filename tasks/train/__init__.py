"""Q/A examples to a QLoRA adapter, and the models around it.

- `prompt`: retrieved passages, chat messages and serving prompts, the same for training, evaluation and serving.
- `sft`: Q/A files (and accepted feedback) to a validated chat SFT dataset with deterministic splits.
- `model` resolves and loads base models; `train` fine-tunes (QLoRA: 4-bit NF4, LoRA, checkpoints, resume);
  `generate` answers with the base model and adapters; `registry` keeps versions and aliases (champion,
  challenger, archived); `policy` decides when an index update is worth retraining; `rerank_train` trains a
  cross-encoder reranker.
- `config`: SFTDataConfig, TrainConfig, RetrainPolicy."""
