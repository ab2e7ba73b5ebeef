"""A throwaway PostgreSQL for the Prefect server: Debian's `postgresql` binaries (`initdb`, `pg_ctl`, `psql`),
a cluster in a folder of its own, listening on loopback TCP only, with a database and a login role for Prefect.

    pg = LocalPostgres(Path(".server/pg"), port=54329)
    url = pg.start()            # postgresql+asyncpg://prefect:...@127.0.0.1:54329/prefect
    ...
    pg.stop()                   # pg_ctl stop; pg.destroy() also removes the cluster

PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user (Debian's package creates
it) and every PostgreSQL command runs as that user. Passwords are generated, kept in files readable by their
owner alone, and passed to `psql` through the environment: they appear in no command line, log or record.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

APP = "prefect"  # the database and the role the Prefect server uses
SUPERUSER = "postgres"
INSTALL_HINT = ("PostgreSQL is not installed: install Debian's `postgresql` package (`apt-get install postgresql`; "
                "CI's .ci/run does), or set RAGTUNE_PG_BINDIR to the folder holding initdb and pg_ctl")


def bindir() -> Path | None:
    """The folder with `initdb`, `pg_ctl`, `postgres` and `psql`: $RAGTUNE_PG_BINDIR, the folder `pg_ctl` on PATH
    links to, or the newest /usr/lib/postgresql/<version>/bin (Debian keeps the server binaries off PATH)."""
    candidates: list[Path] = []
    if os.environ.get("RAGTUNE_PG_BINDIR"):
        candidates.append(Path(os.environ["RAGTUNE_PG_BINDIR"]))
    if shutil.which("pg_ctl"):
        candidates.append(Path(shutil.which("pg_ctl")).resolve().parent)

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", Path(path).parent.name))

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    for folder in candidates:
        if all((folder / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres", "psql")):
            return folder
    return None


def available() -> bool:
    return bindir() is not None


def _run_as() -> str | None:
    """The user PostgreSQL runs as: None (this user) unless this process is root."""
    if os.geteuid() != 0:
        return None
    for name in (SUPERUSER, "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("PostgreSQL cannot run as root and there is no `postgres` or `nobody` user to run it as")


def _reachable_by_others(path: Path) -> bool:
    """Whether every folder above `path` lets other users through (a root-only temp folder does not)."""
    for parent in path.resolve().parents:
        if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return True


class LocalPostgres:
    """One cluster under `root` (or, as root where `root` is not reachable by the `postgres` user, under a
    folder of /tmp named after it), started on 127.0.0.1:`port`."""

    def __init__(self, root: Path, port: int) -> None:
        self.bin = bindir()
        if self.bin is None:
            raise RuntimeError(INSTALL_HINT)
        self.user = _run_as()
        root = Path(root).resolve()
        if self.user and not _reachable_by_others(root):
            digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
            root = Path(tempfile.gettempdir()) / f"ragtune-pg-{digest}"
        self.root, self.port = root, int(port)
        self.data = root / "data"
        self.log = root / "postgres.log"

    # -- helpers ------------------------------------------------------------------------------------------------
    def _cmd(self, args: list[str], env: dict[str, str] | None = None, check: bool = True,
             timeout: float = 120) -> subprocess.CompletedProcess:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        full_env.update({"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", **(env or {})})
        res = subprocess.run([str(self.bin / args[0]), *args[1:]], env=full_env, user=self.user, cwd=self.root,
                             capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({res.returncode}): {(res.stderr or res.stdout).strip()[-800:]}")
        return res

    def _secret(self, name: str) -> str:
        """A generated password kept in `root/<name>.password` (mode 600, owned by the user that reads it)."""
        path = self.root / f"{name}.password"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(24), encoding="utf-8")
            path.chmod(0o600)
        return path.read_text(encoding="utf-8").strip()

    def _chown(self, path: Path) -> None:
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _sql(self, sql: str, database: str = "postgres") -> str:
        res = self._cmd(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", database,
                         "-v", "ON_ERROR_STOP=1", "-tAc", sql], env={"PGPASSWORD": self._secret(SUPERUSER)})
        return res.stdout.strip()

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def running(self) -> bool:
        if not self.initialised():
            return False
        return self._cmd(["pg_ctl", "-D", str(self.data), "status"], check=False).returncode == 0

    def start(self) -> str:
        """initdb (first time only), start, create the Prefect role and database when missing; returns the
        SQLAlchemy URL for PREFECT_API_DATABASE_CONNECTION_URL."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._chown(self.root)
        if self.running():  # left by a stack that was killed: it is ours, start it afresh on this port
            self.stop()
        if not self.initialised():
            pwfile = self.root / "initdb.pw"
            pwfile.write_text(self._secret(SUPERUSER) + "\n", encoding="utf-8")
            pwfile.chmod(0o600)
            self._chown(pwfile)
            try:
                self._cmd(["initdb", "-D", str(self.data), "-U", SUPERUSER, "--pwfile", str(pwfile),
                           "--auth", "scram-sha-256", "-E", "UTF8", "--no-instructions"], timeout=300)
            finally:
                pwfile.unlink(missing_ok=True)
        # loopback TCP only: no Unix socket (its folder would need to be shared with the client's user)
        self.log.touch()
        self._chown(self.log)
        self._cmd(["pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "90",
                   "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                         "-c max_connections=200", "start"], timeout=120)
        password = self._secret(APP)
        if self._sql(f"SELECT 1 FROM pg_roles WHERE rolname = '{APP}'") != "1":
            self._sql(f"CREATE ROLE {APP} LOGIN PASSWORD '{password}'")
        if self._sql(f"SELECT 1 FROM pg_database WHERE datname = '{APP}'") != "1":
            self._sql(f"CREATE DATABASE {APP} OWNER {APP}")
        return self.url()

    def url(self, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{APP}:{self._secret(APP)}@127.0.0.1:{self.port}/{APP}"

    def describe(self) -> str:
        """Where it is, without the password."""
        return f"PostgreSQL on 127.0.0.1:{self.port}, database {APP} (cluster in {self.data})"

    def count(self, table: str) -> int:
        """Rows in one of Prefect's tables (as the superuser): proof that the server writes here."""
        return int(self._sql(f"SELECT count(*) FROM {table}", database=APP) or 0)

    def stop(self, timeout_s: float = 60) -> bool:
        """Fast shutdown (open connections are closed); True when a running server was stopped."""
        if not self.running():
            return False
        self._cmd(["pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", str(int(timeout_s)), "stop"],
                  timeout=timeout_s + 30)
        return True

    def destroy(self) -> None:
        """Stop and remove the cluster and its passwords."""
        with contextlib.suppress(RuntimeError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
