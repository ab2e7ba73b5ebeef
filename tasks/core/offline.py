"""Offline on every device: transformers 5 maps layers (Llama's rotary embedding among them) to kernels fetched
from the Hugging Face Hub on CUDA, through the `kernels` package it depends on. A worker without network then
fails at the first step (`Version 2 of 'kernels-community/rotary' is not available in the local cache and
Hugging Face Hub is in offline mode`). Both switches are read when transformers and kernels are imported, so
they are set here, before any stage imports them; `RAGTUNE_HUB_KERNELS=1` opts in to Hub kernels."""

from __future__ import annotations

import os

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
    return {name: os.environ.get(name, "") for name in SWITCHES}
