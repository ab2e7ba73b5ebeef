"""The `ragtune` command line: thin argument parsing over the flows and tasks.

`parser` builds the commands from one module per group (`data`: ingest, index, search, status, fates;
`models`: train, evaluate, promote, compare, train-reranker, rollback, models; `serve`: serve, calibrate, ask,
feedback; `ops`: demo, watch, sweep, monitor); `render` prints results for people; `common` holds the
config layering the commands share. Commands import flows inside their functions (Prefect, torch and transformers
take seconds to import), so `ragtune --help` stays fast."""

from __future__ import annotations

import contextlib
import json
import os
import sys

from flows.cli.common import CliError
from flows.cli.parser import build_parser

__all__ = ["CliError", "build_parser", "main"]


def _prepare_env(verbose: bool) -> None:
    """Logging through Prefect: runs log to the API at INFO; the console shows them only with -v."""
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "ragtune")
    # the temporary server can take longer than Prefect's 20 s default to start on a busy machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry calls from the server
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "ERROR")
        # progress bars of datasets / transformers / huggingface_hub (model loading, tokenising)
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")


def _one_line(exc: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err.get("loc", ()))
        return f"invalid configuration: {loc}: {err.get('msg')}" if loc else f"invalid configuration: {err.get('msg')}"
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return msg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _prepare_env(args.verbose)
    if args.task_runner:  # read when the flow modules are imported, below
        os.environ["RAGTUNE_TASK_RUNNER"] = args.task_runner
    if args.runner_address:
        os.environ["RAGTUNE_RUNNER_ADDRESS"] = args.runner_address
    real_stdout = sys.stdout
    try:
        # in JSON mode anything a library prints goes to stderr, so stdout holds exactly one object
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            out = args.func(args)
    except KeyboardInterrupt:
        print("ragtune: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the contract: one line, non-zero exit
        msg = _one_line(exc)
        print(f"ragtune {args.command}: error: {msg}", file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "error": msg}), file=real_stdout)
        return 1
    if args.json:
        print(json.dumps({"ok": True, **out}, ensure_ascii=False, default=str), file=real_stdout)
    return 0
