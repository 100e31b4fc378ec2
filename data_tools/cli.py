"""``python -m data_tools``: command-line front end (a thin argparse layer over the library).

Subcommands register themselves through ``add_subcommands(subparsers)``; each subparser's
``func(args) -> int`` returns the exit code. Library errors become one ``error: ...`` line on
stderr and exit status 2; warnings are printed as ``warning: ...`` lines.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from typing import Sequence

from .errors import DataToolsError
from .hdf5_format import DatasetFormatError

EXIT_ERROR = 2
_PLUGINS = ("data_tools.curate", "data_tools.publish")


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert

    words = None
    if args.words is not None:
        try:
            words = json.loads(args.words)
        except json.JSONDecodeError as e:
            raise DataToolsError(f"--words: not JSON ({e.msg})") from None
        if not isinstance(words, dict):
            raise DataToolsError('--words: expected a JSON object such as {"y": ["right", "left"]}')
    summary = convert(
        args.sessions,
        args.output,
        append=args.append,
        force=args.force,
        window=args.window,
        sigma=args.sigma,
        words=words,
        progress=not args.quiet,
        workers=args.workers,
    )
    if not args.quiet:
        print(summary)
    return 0


def add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="teleoperation log sessions -> HDF5 talk-and-tweak dataset",
        description="Convert teleoperation log sessions (format v1, see docs/teleop-log-format.md) into one "
        "HDF5 talk-and-tweak dataset. Every input is validated before anything is written; the "
        "output is written to a temporary file renamed on success. Inputs are never modified.",
    )
    p.add_argument("sessions", nargs="+", metavar="SESSION", help="session folder(s) holding session.json")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="dataset file to write (.hdf5)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true", help="add the episodes to the existing dataset OUT")
    mode.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("--window", type=int, default=5, metavar="J", help="talk-and-tweak window J (default 5)")
    p.add_argument("--sigma", type=float, default=0.001, metavar="M",
                   help="talk-and-tweak threshold in metres (default 0.001)")
    p.add_argument("--words", metavar="JSON", default=None,
                   help='axis words, e.g. \'{"y": ["right", "left"]}\' (positive, negative); default +x forward, '
                   "+y left, +z up")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="PNG decoding threads")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    p.set_defaults(func=_cmd_convert)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_tools",
        description="Teleoperation logs -> HDF5 talk-and-tweak datasets; curation; publishing.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_convert(sub)
    for name in _PLUGINS:
        try:
            module = importlib.import_module(name)
        except ImportError as e:  # a module not written yet; anything else is a real error
            if getattr(e, "name", None) == name:
                continue
            raise
        module.add_subcommands(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input or usage, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return int(args.func(args) or 0)
        except (DataToolsError, DatasetFormatError, FileExistsError) as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130
