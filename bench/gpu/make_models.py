"""On the GPU worker: random-initialised models with SmolLM2's architectures and tokenizer (the real weights are too
large to travel). Throughput and memory do not depend on the weights' values. The 135M one goes to GPU_BASE_135,
where the project's default model resolves under `-p gpupatch`; a 1.7B one (SmolLM2-1.7B's shape) to
/tmp/models for the largest-model cases.

    python3 .gpu/make_models.py .gpu/smol
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

COPIED = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


def make(src: Path, dst: Path, cfg, dtype) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    t = time.time()
    dst.mkdir(parents=True, exist_ok=True)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.save_pretrained(dst)  # safetensors
    for name in COPIED:
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)
    n = sum(p.numel() for p in model.parameters())
    del model
    torch.cuda.empty_cache()
    print(f"made {dst} {n / 1e6:.1f}M params {dtype} in {time.time() - t:.1f}s", flush=True)


def large_config(cfg):
    """SmolLM2-1.7B's shape on the 135M config: 24 layers of width 2,048, 32 heads."""
    cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers = 2048, 8192, 24
    cfg.num_attention_heads = cfg.num_key_value_heads = 32
    cfg.head_dim = 64
    return cfg


def main() -> None:
    import torch
    from transformers import AutoConfig

    src = Path(sys.argv[1])
    torch.manual_seed(0)
    make(src, Path(os.environ["GPU_BASE_135"]), AutoConfig.from_pretrained(src), torch.float32)
    make(src, Path("/tmp/models/SmolLM2-1.7B-architecture-random"), large_config(AutoConfig.from_pretrained(src)),
         torch.bfloat16)


if __name__ == "__main__":
    main()
