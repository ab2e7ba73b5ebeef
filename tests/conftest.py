"""Shared fixtures: offline settings, a temporary workspace, one Prefect test harness per session."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "ragtune")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLE = PROJECT_ROOT / "data" / "sample"

# One setting for every wait on a model, a server, a flow run or a browser. CI runs on the submitting machine, which
# may be busy: a 2-core machine running two other CPU-bound jobs takes this suite 3-5 times as long as a quiet one.
# Every deadline is the time the wait takes on a quiet machine times RAGTUNE_TEST_PATIENCE (default 6, sized for
# such a loaded machine); a wait ends as soon as what it waits for happens, so patience costs nothing when all is
# well, and a wait that runs out says what it was waiting for.
PATIENCE = float(os.environ.get("RAGTUNE_TEST_PATIENCE", "6"))


def patience(quiet_seconds: float) -> float:
    """The deadline, in seconds, for something that takes `quiet_seconds` at most on a quiet machine."""
    return quiet_seconds * PATIENCE


def pytest_collection_modifyitems(config, items) -> None:
    """Every test's hard limit (pytest-timeout, against hangs) follows the one patience setting unless the test or
    the command line sets its own; tests marked `gpu` need a CUDA device: skipped, with the reason, where torch
    sees none."""
    if config.getoption("timeout", None) is None:  # `--timeout N` on the command line wins
        for item in items:
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(patience(300)))
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A real Prefect API (temporary database) shared by every flow test in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=int(patience(20))):
        yield


@pytest.fixture(scope="session")
def base_model_dir(tmp_path_factory) -> str:
    """The packaged SmolLM2 converted once to safetensors, shared by the tests as a local folder."""
    from tasks.core.workspace import Workspace
    from tasks.train.model import PACKAGED_LLM, resolve_base_model

    return resolve_base_model(Workspace(tmp_path_factory.mktemp("base")).ensure(), PACKAGED_LLM)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "ws"


@pytest.fixture
def ws(home: Path):
    from tasks.core.workspace import Workspace

    return Workspace(home).ensure()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):  # noqa: N802 (http.server API)
        path = self.path.split("?", 1)[0]
        if path == "/page.html":
            body = (b"<html><head><title>Remote page</title></head><body><nav>Home | About</nav><main>"
                    b"<h1>Remote page</h1><p>The Harbor connector syncs every fifteen minutes by default and "
                    b"retries three times before raising a Beacon alert.</p></main></body></html>")
            self._send(200, body, "text/html; charset=utf-8")
        elif path == "/records.jsonl":
            body = b'{"id": "r1", "text": "A remote record that is long enough to pass every quality filter here."}\n'
            self._send(200, body, "application/x-ndjson")
        elif path == "/slow":
            time.sleep(3)
            self._send(200, b"too late", "text/plain")
        elif path == "/big":
            self._send(200, b"x" * (2 * 1024 * 1024), "text/plain")
        elif path == "/big-chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"y" * 65536)
        elif path == "/redirect-ftp":
            self.send_response(302)
            self.send_header("Location", "ftp://example.invalid/file.txt")
            self.end_headers()
        else:
            self._send(404, b"not found", "text/plain")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)


@pytest.fixture(scope="session")
def http_server() -> Iterator[str]:
    """A local HTTP server with a page, a JSONL file, a slow URL, large bodies and a bad redirect."""
    class _Quiet(ThreadingHTTPServer):
        def handle_error(self, request, client_address):  # clients that give up early are the point
            pass

    server = _Quiet(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


GOOD_TEXT = ("The Tidewright Relay agent keeps a local queue of up to ten thousand events when the network is down, "
             "and drains it in order once the connection to the hosted region comes back.")


def make_bad_inputs(root: Path) -> dict[str, tuple[str, str]]:
    """A folder with every kind of bad input next to good ones; returns unit -> (fate, reason code)."""
    import gzip
    import json

    root.mkdir(parents=True, exist_ok=True)
    (root / "good.md").write_text("# Relay queue\n\n" + GOOD_TEXT + "\n")
    (root / "good-korean.md").write_text(
        "# 서울 사무소\n\n서울 사무소는 선릉역 근처 솔밭타워 9층에 있으며 평일 오전 9시부터 오후 6시까지 운영합니다. "
        "회의실은 사내 포털에서 예약할 수 있습니다.\n")
    (root / "binary.txt").write_bytes(bytes(range(256)) * 16)
    (root / "latin1.txt").write_bytes(("Le café de Lisbonne ouvre à huit heures et ferme à dix-huit heures, "
                                       "du lundi au vendredi, près de la gare.").encode("latin-1"))
    (root / "invalid-utf8.txt").write_bytes(bytes(range(128, 256)) * 3)
    (root / "mis-decoded.txt").write_bytes(b"\xff\xfe\xfa\xfb" * 50 + b"\x81\x82\x83" * 200)
    (root / "empty.txt").write_bytes(b"")
    (root / "blank.md").write_text("   \n\n\t  \n")
    (root / "nul.txt").write_bytes(GOOD_TEXT.encode() + b"\x00\x00" + GOOD_TEXT.encode())
    import random

    rng = random.Random(0)
    vocab = [f"{w}{i}" for i, w in enumerate(["harbor", "tide", "relay", "beacon", "mooring", "flow"] * 500)]
    (root / "huge-line.txt").write_text(" ".join(rng.choices(vocab, k=1_200_000)))  # about 10 MB, one line
    r1 = "Beacons send an alert when a Flow run fails three times in a row or when a Tide misses its schedule."
    r5 = "Moorings keep connector secrets encrypted at rest and hand them to Relay only for the run that needs them."
    lines = [json.dumps({"id": "r1", "text": r1}), "{oops", json.dumps({"id": "r2"}),
             json.dumps({"id": "r3", "text": None}), json.dumps({"id": "r4", "text": ["a", "b"]}),
             json.dumps({"id": "r5", "text": r5})]
    (root / "records.jsonl").write_text("\n".join(lines) + "\n")
    (root / "not-object.json").write_text("[1, 2, 3]")
    (root / "scalar.json").write_text("12")
    (root / "archive.txt.gz").write_bytes(gzip.compress(GOOD_TEXT.encode()))
    (root / "tool.exe").write_bytes(b"MZ\x90\x00" * 10)
    (root / "fake.pdf").write_text("I am not a PDF, just text with a pdf extension.")
    (root / "scripts-only.html").write_text("<html><head><script>x()</script></head><body><script>y()</script></body></html>")
    (root / "leftover-html.txt").write_text("<div class='x'><p>Harbor connectors retry a failed sync three times "
                                            "before a Beacon alert is raised.</p></div>")
    (root / "good2.md").write_text("# Relay queue\n\n" + GOOD_TEXT + "\n")
    near = GOOD_TEXT + " (Updated.)"
    (root / "near-copy.txt").write_text("# Relay queue\n\n" + near + "\n")
    (root / "spam.txt").write_text("Buy cheap tickets now, " * 40 + "and more.")
    (root / "symbols.txt").write_text("#### ---- **** ==== |||| ~~~~ ++++ //// \\\\\\\\ ;;;; :::: " * 4)
    (root / "ghost.txt").symlink_to(root / "does-not-exist.txt")
    (root / ".hidden.md").write_text("hidden files are not inputs")
    return {
        "good.md": ("accepted", ""), "good-korean.md": ("accepted", ""), "latin1.txt": ("accepted", ""),
        "binary.txt": ("quarantined", "binary"), "invalid-utf8.txt": ("quarantined", "decode"),
        "mis-decoded.txt": ("filtered", "misdecoded"),  # a UTF-16 byte order mark, then random bytes
        "empty.txt": ("filtered", "empty"), "blank.md": ("filtered", "empty"), "nul.txt": ("quarantined", "binary"),
        "huge-line.txt": ("accepted", ""),  # 10 MB on one line: long, not bad (max_text_chars is 20 million)
        "records.jsonl#r1": ("accepted", ""), "records.jsonl#line-2": ("quarantined", "json"),
        "records.jsonl#r2": ("quarantined", "record"), "records.jsonl#r3": ("quarantined", "record"),
        "records.jsonl#r4": ("quarantined", "record"), "records.jsonl#r5": ("accepted", ""),
        "not-object.json#row-0": ("quarantined", "record"), "not-object.json#row-1": ("quarantined", "record"),
        "not-object.json#row-2": ("quarantined", "record"), "scalar.json": ("quarantined", "json"),
        "archive.txt.gz": ("filtered", "unsupported"), "tool.exe": ("filtered", "unsupported"),
        "fake.pdf": ("quarantined", "pdf"), "scripts-only.html": ("filtered", "html_no_text"),
        "leftover-html.txt": ("accepted", ""),  # an HTML fragment saved as .txt is read as a page
        "good2.md": ("duplicate", "exact_duplicate"),
        "near-copy.txt": ("duplicate", "near_duplicate"), "symbols.txt": ("filtered", "mostly_symbols"),
        "spam.txt": ("accepted", ""),  # repetitive, but the user's: the knowledge profile never drops for that
        "ghost.txt": ("quarantined", "unreadable"),
    }
