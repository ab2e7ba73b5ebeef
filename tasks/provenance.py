"""Provenance facts written into every meta file: git commit and package versions."""

from __future__ import annotations

import subprocess
import sys
from functools import lru_cache
from importlib import metadata

from tasks.workspace import PROJECT_ROOT

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
