"""The argument parser: global options, then one sub-command per job, registered by the command modules."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from flows.cli import data, models, ops, serve
from flows.cli.common import EPILOG


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ragtune", description="Keep a RAG index and a QLoRA-tuned LLM fresh.",
                                epilog=EPILOG)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    p.add_argument("--task-runner", choices=["threads", "dask", "ray"],
                   help="where flows run their tasks (default threads; RAGTUNE_TASK_RUNNER)")
    p.add_argument("--runner-address", metavar="ADDR", help="a Dask scheduler or Ray cluster address "
                   "(default: a local cluster; RAGTUNE_RUNNER_ADDRESS)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], dict[str, Any]] | None,
            help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_, epilog=EPILOG)
        sp.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        sp.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
        sp.set_defaults(func=fn)
        return sp

    ops.add_demo(add)
    data.add_commands(add)
    models.add_commands(add)
    ops.add_commands(add)
    serve.add_commands(add)
    return p
