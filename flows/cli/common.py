"""What every command shares: the one-line error type, the workspace, and a stage config built from the one
layering (defaults < workspace config.yaml < --config file < the flags that were given)."""

from __future__ import annotations

import argparse
from typing import Any, TypeVar

from pydantic import BaseModel

from tasks.core.config import load_section
from tasks.core.workspace import Workspace

EPILOG = "RAGTUNE_HOME selects the workspace (default ./.ragtune). With --json, one JSON object goes to stdout."
C = TypeVar("C", bound=BaseModel)


class CliError(Exception):
    """An error whose message is already the one line the user should read."""


def workspace() -> Workspace:
    return Workspace.from_env()


def stage_config(args: argparse.Namespace, section: str, model: type[C], **flags: Any) -> C:
    """`model` for the command's stage: the workspace's config.yaml `section`, then `--config FILE`, then the
    flags given (None means not given; nested flags as dicts)."""
    return load_section(section, model, ws=workspace(), config_file=getattr(args, "config", None), overrides=flags)


def review_actions(parser: argparse.ArgumentParser) -> Any:
    """Sub-commands under one parser (`feedback list|accept|reject`); --json and -v work on either level."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, fn: Any, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        # SUPPRESS: an option given before the action (`feedback --json list`) is not reset by this parser
        sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
        sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log to stderr")
        sp.set_defaults(func=fn)
        return sp

    return action
