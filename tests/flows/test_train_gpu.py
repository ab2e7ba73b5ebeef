"""Training on a CUDA device (marker `gpu`, skipped without one): QLoRA with the base model in 4-bit NF4 with
double quantisation and bf16 compute, and bf16 LoRA without quantisation, on the packaged SmolLM2-135M-Instruct;
each lowers the validation loss, changes only the adapter, and stays within a small memory footprint.
`bench/gpu_check.py` runs these with its throughput measurements."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.flows.test_train import qa_lines, tiny_config

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.mark.parametrize("quantization", ["4bit", "none"])
def test_cuda_training_in_bf16_lowers_the_loss(tmp_path, base_model_dir, quantization):
    import torch

    from tasks.core.workspace import Workspace, read_json
    from tasks.train.train import train

    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps(r) for r in qa_lines()) + "\n")
    ws = Workspace(tmp_path / "ws").ensure()
    torch.cuda.reset_peak_memory_stats()
    res = train(ws, tiny_config(qa, base_model_dir, run_id=f"cuda-{quantization}", quantization=quantization,
                                precision="bf16", max_steps=12, eval_steps=4, save_steps=4))
    peak_gib = torch.cuda.max_memory_allocated() / 2**30
    meta = read_json(ws.models / f"cuda-{quantization}" / "meta.json")
    assert res.device == meta["device"] == "cuda" and meta["compute_dtype"] == "bfloat16"
    assert meta["quantization"] == ("nf4-double-quant" if quantization == "4bit" else "none")
    assert meta["weights"] == {"base_unchanged": True, "adapter_changed": True}
    evals = [h["eval_loss"] for h in meta["history"] if h["eval_loss"] is not None]
    assert evals[0] > evals[-1]
    assert (Path(res.adapter_dir) / "adapter_model.safetensors").exists()
    assert 0 < peak_gib < 8, f"{peak_gib:.2f} GiB for a 135M model"
    print(f"\n{quantization}: peak {peak_gib:.2f} GiB, eval loss {evals[0]:.3f} -> {evals[-1]:.3f}")
