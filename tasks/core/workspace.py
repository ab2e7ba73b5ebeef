"""The workspace on disk (RAGTUNE_HOME): its folders, atomic writes, pointers, locks and run ids."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

DEFAULT_HOME = ".ragtune"
_UMASK = os.umask(0)
os.umask(_UMASK)
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # tasks/core/workspace.py -> the checkout


class WorkspaceBusyError(RuntimeError):
    """Another process holds the workspace lock for the same stage."""


@dataclass(frozen=True)
class Workspace:
    """Paths of one ragtune workspace; everything a run writes lives under `root`."""

    root: Path

    @classmethod
    def from_env(cls, home: str | os.PathLike[str] | None = None) -> Workspace:
        """The workspace named by `home`, else `RAGTUNE_HOME`, else `./.ragtune`."""
        raw = home or os.environ.get("RAGTUNE_HOME") or DEFAULT_HOME
        return cls(Path(raw).expanduser().resolve())

    @property
    def sources(self) -> Path:
        return self.root / "sources"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def qdrant(self) -> Path:
        return self.root / "qdrant"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def runs(self) -> Path:
        """Staging folders of runs in progress; removed when a run ends."""
        return self.root / "runs"

    def dataset_dir(self, kind: str = "docs") -> Path:
        return self.datasets / kind

    def index_meta_path(self, collection: str) -> Path:
        """`indexes/<alias>/<version>.json`, the provenance of collection `<alias>__<version>`."""
        name, _, version = collection.partition("__")
        return self.root / "indexes" / name / f"{version}.json"

    def ensure(self) -> Workspace:
        for p in (self.sources, self.datasets, self.quarantine, self.reports, self.runs):
            p.mkdir(parents=True, exist_ok=True)
        return self

    def lock(self, name: str, timeout_s: float = 0.0):
        """An exclusive inter-process lock for one stage (a `filelock.FileLock` context manager)."""

        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / f".{name}.lock"))

        class _Guard:
            def __enter__(self_inner):
                try:
                    lock.acquire(timeout=timeout_s)
                except Timeout as exc:
                    raise WorkspaceBusyError(
                        f"another ragtune {name} run holds {self.root}/.{name}.lock; wait for it to finish"
                    ) from exc
                return lock

            def __exit__(self_inner, *exc):
                lock.release()
                return False

        return _Guard()


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id such as `20261121T101500Z-3f9a1c`."""
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs (possibly as another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; published files follow the umask
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as JSON lines, atomically."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


def read_pointer(path: Path) -> str | None:
    """The id a pointer file (such as `datasets/docs/latest`) holds, or None."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return value or None


def write_pointer(path: Path, value: str) -> None:
    atomic_write_text(path, value + "\n")


def publish_dir(staged: Path, final: Path) -> bool:
    """Move a fully written staging folder into place; False if `final` already exists (kept as is)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        shutil.rmtree(staged, ignore_errors=True)
        return False
    try:
        os.rename(staged, final)
    except OSError:
        if final.exists():  # a concurrent writer won the race with identical content
            shutil.rmtree(staged, ignore_errors=True)
            return False
        raise
    return True
