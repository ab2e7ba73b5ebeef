"""The offline model search of bench/gpu_check.py: causal LMs in safetensors or GGUF, their sizes, the largest."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from bench.gpu import one_line

DEFAULT_LABEL = "SmolLM2-135M-Instruct (default)"  # tasks.train.model.PACKAGED_LLM, as the table names it


def safetensors_parameters(folder: Path) -> int:
    """Parameters in a folder's safetensors files, from their headers alone."""
    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        with open(f, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for name, info in header.items():
            if name != "__metadata__":
                n = 1
                for d in info["shape"]:
                    n *= int(d)
                total += n
    return total


def find_model_files(root: Path) -> list[tuple[str, Path, str | None]]:
    """(kind, folder, gguf file) for each .gguf file and each folder with config.json and safetensors under root."""
    if root.is_file():
        return [("gguf", root.parent, root.name)] if root.suffix == ".gguf" else []
    found: list[tuple[str, Path, str | None]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("__pycache__", ".git", "node_modules")
                       and not d.endswith((".dist-info", ".egg-info"))]
        found += [("gguf", Path(dirpath), f) for f in sorted(filenames) if f.endswith(".gguf")]
        if "config.json" in filenames and any(f.endswith(".safetensors") for f in filenames):
            found.append(("safetensors", Path(dirpath), None))
    return found


def search_roots(extra: list[Path]) -> list[tuple[Path, str]]:
    """Installed packages, the local Hugging Face cache, and folders given with --model-dir."""
    import site

    roots = [(Path(p), "installed package") for p in [*site.getsitepackages(), site.getusersitepackages()]]
    hub = os.environ.get("HF_HUB_CACHE") or str(Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub")
    roots.append((Path(hub).expanduser(), "local Hugging Face cache"))
    roots += [(p, "--model-dir") for p in extra]
    seen, out = set(), []
    for p, source in roots:
        if p.exists() and p.resolve() not in seen:
            seen.add(p.resolve())
            out.append((p, source))
    return out


def describe_model(kind: str, folder: Path, gguf_file: str | None, source: str) -> dict[str, Any]:
    """Size, architecture and whether transformers can load it as a causal LM without the network."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as CAUSAL

    parts = folder.parts  # a hub cache snapshot: models--ORG--NAME/snapshots/REV
    hub = next((x for x in parts if x.startswith("models--")), None) if "snapshots" in parts else None
    where = hub.removeprefix("models--").replace("--", "/") if hub else f"{folder.parent.name}/{folder.name}"
    name = f"{folder.name}/{gguf_file}" if gguf_file else where
    c: dict[str, Any] = {"name": name, "source": source, "kind": kind, "path": str(folder), "gguf_file": gguf_file,
                         "parameters": None, "architecture": None, "loadable": False, "reason": ""}
    try:
        if kind == "gguf":
            from gguf import GGUFReader

            reader = GGUFReader(str(folder / gguf_file))
            c["parameters"] = sum(int(t.n_elements) for t in reader.tensors)
            config = AutoConfig.from_pretrained(folder, gguf_file=gguf_file)
        else:
            raw = json.loads((folder / "config.json").read_text())
            archs = raw.get("architectures") or []
            c["architecture"] = ",".join(archs) or None
            if not set(archs) & set(CAUSAL.values()):
                c["reason"] = f"not a causal LM (architectures {archs})"
                return c
            if raw.get("quantization_config"):
                c["reason"] = f"pre-quantised checkpoint ({raw['quantization_config'].get('quant_method')})"
                return c
            c["parameters"] = safetensors_parameters(folder)
            config = AutoConfig.from_pretrained(folder)
        c["architecture"] = c["architecture"] or CAUSAL.get(config.model_type) or config.model_type
        if config.model_type not in CAUSAL:
            c["reason"] = f"model type {config.model_type!r} has no causal LM class in this transformers"
            return c
        c["loadable"], c["reason"] = True, f"config loads offline as {CAUSAL[config.model_type]}"
    except Exception as exc:
        c["reason"] = one_line(exc)
    return c


def pick_largest(candidates: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str]:
    """The loadable candidate with the most parameters (the default model wins a tie), and why."""
    ok = [c for c in candidates if c["loadable"] and c["parameters"]]
    if not ok:
        return None, "no candidate loads offline as a causal LM"
    best = max(ok, key=lambda c: (c["parameters"], c.get("is_default", False)))
    others = len(candidates) - 1
    why = (f"largest of {len(ok)} loadable causal LM(s) ({others} other candidate(s) seen): "
           f"{best['parameters'] / 1e6:,.1f}M parameters")
    return best, why


def default_model_location() -> tuple[Path | None, str]:
    """Folder and GGUF file of the project's default base model (packaged:SmolLM2-135M-Instruct)."""
    from tasks.train.model import _PACKAGED, PACKAGED_LLM, packaged_dir

    package, gguf_file, _ = _PACKAGED[PACKAGED_LLM]
    try:
        return packaged_dir(package), gguf_file
    except FileNotFoundError:
        return None, gguf_file


def discover_models(extra: list[Path]) -> dict[str, Any]:
    """Every candidate under the search roots (the default model marked), the largest loadable one, and why."""
    folder, gguf_file = default_model_location()
    candidates = []
    for root, source in search_roots(extra):
        for kind, path, gf in find_model_files(root):
            c = describe_model(kind, path, gf, source)
            c["is_default"] = bool(folder) and path.resolve() == folder.resolve() and gf == gguf_file
            candidates.append(c)
    best, why = pick_largest(candidates)
    return {"candidates": candidates, "largest": best, "why": why}


def model_label(c: dict[str, Any] | None) -> str:
    """A candidate's name for the table: file or folder name and size in millions of parameters."""
    if not c:
        return "?"
    size = f" ({c['parameters'] / 1e6:,.1f}M)" if c.get("parameters") else ""
    return f"{(c.get('gguf_file') or c['name']).removesuffix('.gguf')}{size}"
