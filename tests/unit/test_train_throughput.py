"""bench/train_throughput.py: the model FLOPs behind its MFU figure."""

from __future__ import annotations

import pytest

from bench.train_throughput import flops_per_token, matmul_params, matmul_rate

transformers = pytest.importorskip("transformers")


def test_matmul_params_are_the_decoder_layers_linear_weights():
    h, i, layers, heads, kv = 64, 160, 3, 8, 2
    cfg = transformers.LlamaConfig(vocab_size=1000, hidden_size=h, intermediate_size=i, num_hidden_layers=layers,
                                   num_attention_heads=heads, num_key_value_heads=kv)
    head_dim = h // heads
    per_layer = h * h + 2 * h * kv * head_dim + h * h + 3 * h * i  # q, k and v (grouped), o; gate, up, down
    assert matmul_params(cfg) == layers * per_layer  # embeddings and the vocabulary projection left out


def test_flops_per_token_count_the_recomputed_forward():
    assert flops_per_token(10, checkpointing=False) == 40
    assert flops_per_token(10, checkpointing=True) == 60


def test_matmul_rate_is_a_plausible_flop_rate():
    torch = pytest.importorskip("torch")
    rate = matmul_rate("cpu", torch.float32, size=256, reps=2)
    assert 1e8 < rate < 1e14
