"""The ``embedstream`` command: a thin layer over library calls that the tests also make.

``parser`` holds the grammar, ``commands`` a typed function per command, ``logs`` the logging set-up.
Every deliberate failure (no broker, model not built, store locked, collection mismatch, bad settings) is an
``EmbedstreamError`` and ends with one line on stderr that says what to do, and exit status 2; anything else
is a bug and ends with its traceback.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable, Sequence
from typing import Any

from embedstream.schemas.errors import EmbedstreamError
from embedstream.schemas.settings import Settings
from embedstream.workers.cli.logs import configure_logging
from embedstream.workers.cli.parser import parser

PASSES_ON_TO_BEAM = ("ingest", "demo")

__all__ = ["main", "parser"]


def call(command: Callable[..., int], args: argparse.Namespace, beam_args: list[str]) -> int:
    """Run ``command`` with its parameters taken from the parsed options by name; ``settings`` and
    ``beam_args`` are filled in here."""
    values: dict[str, Any] = {}
    for name in inspect.signature(command).parameters:
        if name == "settings":
            values[name] = Settings.load(args.config)
        elif name == "beam_args":
            values[name] = beam_args
        else:
            values[name] = getattr(args, name)
    return int(command(**values))


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parser().parse_known_args(argv)
    configure_logging(args.verbose, args.log_format)
    if extra and args.command not in PASSES_ON_TO_BEAM:
        print(f"embedstream: error: unrecognized arguments: {' '.join(extra)}", file=sys.stderr)
        return 2
    try:
        return call(args.run, args, extra)
    except EmbedstreamError as exc:  # the project's own errors only: anything else is a bug, with a traceback
        print(f"embedstream: error: {exc}", file=sys.stderr)
        return 2
