"""Gradient checkpointing by memory estimate (`train.gradient_checkpointing: auto`)."""

from __future__ import annotations

from types import SimpleNamespace

from tasks.train.config import SFTDataConfig, TrainConfig
from tasks.train.train import activation_bytes, largest_micro_batch, resolve_checkpointing

# SmolLM2-135M's shape; and SmolLM2-1.7B's
SMALL = SimpleNamespace(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9)
LARGE = SimpleNamespace(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32)
GIB = 2**30


def test_the_estimate_matches_the_measured_cpu_figure_and_scales_with_tokens():
    # measured on CPU (LoRA r16 on all linear layers, bf16 autocast, no checkpointing): 1.5 GB for 4 x 256 tokens,
    # 3.5 GB for 8 x 256
    for rows, measured in ((4, 1.50e9), (8, 3.47e9)):
        est = activation_bytes(SMALL, rows, 256, False, "cpu")
        assert 0.6 * measured < est < 1.4 * measured
    gpu = [activation_bytes(LARGE, 1, w, False, "cuda") for w in (1024, 2048)]
    assert gpu[1] == 2 * gpu[0]  # memory-efficient attention: linear in tokens
    cpu = [activation_bytes(LARGE, 1, w, False, "cpu") for w in (1024, 2048)]
    assert cpu[1] > 2 * cpu[0]  # the CPU path keeps the attention probabilities
    for cfg in (SMALL, LARGE):  # checkpointing keeps a fraction of it
        assert activation_bytes(cfg, 8, 512, True, "cuda") < activation_bytes(cfg, 8, 512, False, "cuda") / 5


def test_auto_turns_checkpointing_off_only_where_the_activations_fit():
    assert resolve_checkpointing(True, "cuda", LARGE, 8, 512, 80 * GIB)[0] is True  # as set
    assert resolve_checkpointing(False, "cpu", SMALL, 8, 512)[0] is False
    on, why = resolve_checkpointing("auto", "cpu", SMALL, 1, 16, 10**15)
    assert on and "CPU" in why  # host memory: always on for CPU training
    need = activation_bytes(LARGE, 4, 4096, False, "cuda")  # ~21 GiB
    on, why = resolve_checkpointing("auto", "cuda", LARGE, 4, 4096, int(need / 0.8) + GIB)
    assert not on and "GiB" in why and "4 x 4096" in why
    on, why = resolve_checkpointing("auto", "cuda", LARGE, 4, 4096, int(need / 0.8) - GIB)
    assert on and "auto: on" in why


def test_the_largest_micro_batch_is_the_budgets_rows_of_the_longest_example():
    data = SFTDataConfig(max_length=512)
    assert largest_micro_batch(TrainConfig(batch_size=8, data=data), [100, 300, 250]) == (8, 300)
    tokens = TrainConfig(tokens_per_step=16384, micro_batch_tokens=4096, data=data)
    assert largest_micro_batch(tokens, [100, 300, 250]) == (13, 300)
    assert largest_micro_batch(TrainConfig(tokens_per_step=200, data=data), [300]) == (1, 300)  # a batch of its own
    assert largest_micro_batch(TrainConfig(data=data), []) == (8, 512)
