"""On the GPU worker, before gpu_check: the versions that were found, and one 4-bit linear layer on the GPU."""

from __future__ import annotations

import importlib

PACKAGES = ("torch", "transformers", "trl", "peft", "bitsandbytes", "datasets", "accelerate", "prefect",
            "great_expectations", "huggingface_hub", "pydantic")


def main() -> None:
    for name in PACKAGES:
        try:
            m = importlib.import_module(name)
            print(name, getattr(m, "__version__", "?"), getattr(m, "__file__", ""))
        except Exception as exc:  # a report line per package, whatever breaks
            print(name, "IMPORT FAILED:", type(exc).__name__, str(exc)[:300])
    import torch

    print("cuda", torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name(0))
    try:
        import bitsandbytes as bnb

        layer = bnb.nn.Linear4bit(1024, 1024, compute_dtype=torch.bfloat16, quant_type="nf4").cuda()
        y = layer(torch.randn(8, 1024, device="cuda", dtype=torch.bfloat16))
        torch.cuda.synchronize()
        print("bnb 4bit linear ok", tuple(y.shape))
    except Exception as exc:
        print("bnb 4bit FAILED:", type(exc).__name__, str(exc)[:500])


if __name__ == "__main__":
    main()
