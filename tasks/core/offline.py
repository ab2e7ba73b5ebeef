"""Offline on every device: transformers 5 maps layers (Llama's rotary embedding among them) to kernels fetched
from the Hugging Face Hub on CUDA, through the `kernels` package it depends on. A worker without network then
fails at the first step (`Version 2 of 'kernels-community/rotary' is not available in the local cache and
Hugging Face Hub is in offline mode`). Both switches are read when transformers and kernels are imported, so
they are set here, before any stage imports them; `RAGTUNE_HUB_KERNELS=1` opts in to Hub kernels.

The CPU path has the same trap without any switch: bitsandbytes' CPU backend, on processors with AVX-512 BF16,
calls `kernels.get_kernel("kernels-community/quantization-bitsandbytes")` when it is imported, which asks the
Hub (and would download and load code from it). With Hub kernels off, the `kernels` package is hidden from this
process (`sys.modules["kernels"] = None`, the standard way to make an import fail), so transformers treats it
as absent and bitsandbytes falls back to its built-in CPU kernels without a network call; its warning about
that fallback is dropped."""

from __future__ import annotations

import logging
import os
import sys

# transformers: lazy kernel loading and `use_kernels` (read at call time)
# kernels: the layer mapping that swaps forwards for Hub kernels (read when `kernels` is imported)
SWITCHES = {"USE_HUB_KERNELS": "0", "DISABLE_KERNEL_MAPPING": "1"}


def hub_kernels_wanted() -> bool:
    return os.environ.get("RAGTUNE_HUB_KERNELS", "").strip().lower() in ("1", "true", "yes", "on")


def keep_kernels_offline() -> dict[str, str]:
    """Turn Hub kernels off (unless RAGTUNE_HUB_KERNELS opts in), leaving any value the user set; returns what
    is now in effect."""
    if not hub_kernels_wanted():
        for name, value in SWITCHES.items():
            os.environ.setdefault(name, value)
        if os.environ["USE_HUB_KERNELS"].strip().upper() in ("0", "NO", "FALSE", "OFF"):
            hide_kernels_package()
    return {name: os.environ.get(name, "") for name in SWITCHES}


def _not_the_fallback_warning(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Failed to load CPU gemm_4bit_forward from kernels-community")


def hide_kernels_package() -> bool:
    """Make `import kernels` fail in this process unless it was imported already; True when hidden."""
    if sys.modules.get("kernels", None) is not None:
        return False
    sys.modules["kernels"] = None  # type: ignore[assignment]
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_not_the_fallback_warning)
    return True
