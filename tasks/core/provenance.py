"""Provenance facts written into every meta file: git commit, package versions, file and code digests."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from tasks.core.workspace import PROJECT_ROOT

TRACKED_PACKAGES = (
    "ragtune", "prefect", "great-expectations", "pandas", "pyarrow", "datasets", "datasketch",
    "trafilatura", "pypdf", "ftfy", "httpx", "qdrant-client", "sentence-transformers", "torch",
    "transformers", "peft", "trl", "bitsandbytes",
)


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The project's git commit (with `-dirty` when the tree has changes), or None outside a checkout."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape ragtune's outputs (missing ones left out)."""
    found = {"python": sys.version.split()[0]}
    for name in TRACKED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def provenance() -> dict[str, object]:
    return {"git_commit": git_commit(), "packages": package_versions()}


def file_digest(path: Path) -> str:
    """A short SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def code_digest(*paths: Path) -> str:
    """A short hash of the Python source under `paths` (files or folders, every `.py` in sorted order with its
    relative name), so outputs built by changed code are not mistaken for reusable ones."""
    h = hashlib.sha256()
    for root in paths:
        files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
        for f in files:
            h.update(str(f.relative_to(PROJECT_ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]
