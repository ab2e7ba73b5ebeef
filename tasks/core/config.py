"""Configuration shared by every stage: the base of the typed stage configs, and the ONE layering of settings —
defaults < the workspace's `config.yaml` < a `--config` file < command-line flags (or explicit flow parameters).

Each stage keeps its own typed config next to its code (`tasks/<stage>/config.py`); this module only knows how
to read and layer them. The workspace file is read here and nowhere else."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict

from tasks.core.workspace import PROJECT_ROOT, Workspace, atomic_write_text

SAMPLE_DIR = PROJECT_ROOT / "data" / "sample"
SAMPLE_CORPUS = "data/sample/corpus"
SAMPLE_MESSY = "data/sample/messy"
SAMPLE_QA = "data/sample/qa.jsonl"
WORKSPACE_CONFIG = "config.yaml"  # stage configs of this workspace: defaults under --config files and flags

C = TypeVar("C", bound=BaseModel)


class StageConfig(BaseModel):
    """Base for stage configs: unknown keys are an error, so a typo in YAML does not pass silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def fingerprint(self) -> str:
        """A short hash of the config, used in content addresses and cache keys."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def load_yaml_config(path: str | Path | None, section: str | None = None) -> dict[str, Any]:
    """A YAML config file as a mapping ({} when no path is given). With `section`, that top-level section when
    the file has one, else the whole file (a file may hold one stage's fields, or sections per stage)."""
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {p} must hold a mapping, not {type(data).__name__}")
    if section is not None and isinstance(data.get(section), dict):
        return data[section]
    return data


def workspace_config(ws: Workspace) -> dict[str, Any]:
    """The workspace's own `config.yaml` (sections per stage), or {}."""
    path = ws.root / WORKSPACE_CONFIG
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of sections (index:, train:, ...), not {type(data).__name__}")
    return data


def workspace_section(ws: Workspace | None, section: str) -> dict[str, Any]:
    """One section of the workspace's `config.yaml`, or {}."""
    if ws is None:
        return {}
    value = workspace_config(ws).get(section) or {}
    if not isinstance(value, dict):
        raise ValueError(f"{ws.root / WORKSPACE_CONFIG}: section {section!r} must be a mapping")
    return value


def update_workspace_config(ws: Workspace, updates: dict[str, dict[str, Any]], header: str) -> Path:
    """Merge `updates` (sections) into the workspace's `config.yaml`, keeping every other key; atomic."""
    data = deep_merge(workspace_config(ws), updates)
    path = ws.root / WORKSPACE_CONFIG
    atomic_write_text(path, f"# {header}; edit freely (--config files, flags and flow parameters take precedence)\n"
                      + yaml.safe_dump(data, sort_keys=True, allow_unicode=True))
    return path


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`; nested mappings merge key by key, everything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_section(section: str, model: type[C], *, ws: Workspace | None = None, config_file: str | Path | None = None,
                 overrides: dict[str, Any] | None = None) -> C:
    """A stage config from its layers: defaults < `ws`'s config.yaml `section` < `config_file` (its `section`,
    or the whole file) < `overrides` (flags that were given; None values are skipped)."""
    data = deep_merge(workspace_section(ws, section), load_yaml_config(config_file, section))
    return model.model_validate(deep_merge(data, _given(overrides or {})))


def with_workspace(ws: Workspace, section: str, cfg: C) -> C:
    """A flow parameter completed from the workspace's config.yaml: every field the caller did not set
    explicitly (at any depth) takes the workspace's value, so deployments and the CLI see the same settings."""
    defaults = workspace_section(ws, section)
    if not defaults:
        return cfg
    return type(cfg).model_validate(deep_merge(defaults, explicit_fields(cfg)))


def explicit_fields(cfg: BaseModel) -> dict[str, Any]:
    """The fields of `cfg` that were set explicitly, at any depth: a nested config counts by its own set fields,
    so a value assigned inside it (`cfg.data.context_k = 4`) is seen even though `data` itself was not set."""
    out: dict[str, Any] = {}
    for name in type(cfg).model_fields:
        value = getattr(cfg, name)
        if isinstance(value, BaseModel):
            inner = explicit_fields(value)
            if inner:
                out[name] = inner
        elif name in cfg.model_fields_set:
            out[name] = cfg.model_dump(mode="json", include={name})[name]
    return out


def _given(overrides: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, dict):
            value = _given(value)
            if value:
                out[key] = value
        elif value is not None:
            out[key] = value
    return out


def resolve_local_source(source: str) -> Path | None:
    """A local source path, tried relative to the working directory and then to the project root."""
    p = Path(source).expanduser()
    if p.is_absolute():
        return p
    if p.exists() or p.is_symlink():
        return p.resolve()
    alt = PROJECT_ROOT / p
    return alt if alt.exists() else p.resolve()
