"""The ``al-loop`` command: a module per command (or close group), each with ``add_parser(sub)``
and ``run(args) -> int``; this module builds the parser from them and dispatches.

A command module parses, calls the library and presents: policy lives in the modules it calls.
Commands import what they need inside ``run``, so ``al-loop --help`` starts at once (the models,
the strategy registry and the metrics all pull torch). Every setting a flag sets is resolved
once by :func:`al_loop.settings.resolve` (flag, environment, workspace, default) and handed
down; nothing here writes ``os.environ``. Every user-fixable error is an
:class:`~al_loop.errors.AlLoopError`; :data:`EXIT_CODES` turns it into an exit code, here only.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from al_loop import __version__
from al_loop.cli import (
    candidates,
    compare,
    config,
    curve,
    demo,
    embed,
    export,
    fetch,
    init,
    measure,
    next_batch,
    report,
    sample,
    serve,
    simulate,
    status,
    tile,
    train,
    weights,
)
from al_loop.cli import map as map_
from al_loop.errors import AlLoopError

# (exception, exit code, message to stderr): the one place an exception becomes an exit code.
EXIT_CODES = (
    (AlLoopError, 2, "al-loop: error: {}"),
    (KeyboardInterrupt, 130, "al-loop: interrupted; finished work is kept, run the same command to resume"),
)
# Every command and its module, in the order `al-loop --help` lists them.
COMMANDS = {
    "weights": weights,
    "embed": embed,
    "sample": sample,
    "fetch": fetch,
    "tile": tile,
    "train": train,
    "map": map_,
    "measure": measure,
    "compare": compare,
    "export": export,
    "candidates": candidates,
    "simulate": simulate,
    "init": init,
    "next-batch": next_batch,
    "status": status,
    "curve": curve,
    "report": report,
    "config": config,
    "demo": demo,
    "serve-backend": serve,
}


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors suggest the nearest valid command or flag."""

    def error(self, message: str):
        super().error(message + _suggestion(self, message))


def _suggestion(parser: argparse.ArgumentParser, message: str) -> str:
    """'; did you mean ...?' for a mistyped command (invalid choice) or flag (unrecognized), else ''."""
    import difflib
    import re

    choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if choice:
        wrong, options = choice[1], re.findall(r"'([^']*)'", choice[2])
    else:
        flags = re.search(r"unrecognized arguments: (.*)", message)
        wrong = next((a.split("=")[0] for a in (flags[1].split() if flags else []) if a.startswith("--")), None)
        options = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
    close = difflib.get_close_matches(wrong, options, n=1, cutoff=0.6) if wrong else []
    return f"; did you mean `{close[0]}`?" if close else ""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="al-loop",
        description="Active learning for mapping Martian pits and skylights with SAM and Label Studio.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A library's warning as one line of the tool's own, naming where it came from."""
    origin = Path(filename).parent.name if "site-packages" in str(filename) else Path(filename).stem
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    print(f"al-loop: warning: {text} ({category.__name__}, {origin})", file=file or sys.stderr)


def _quiet_libraries() -> None:
    """Library warnings and GDAL's log lines become one-line messages of the tool's own."""
    import logging
    import warnings

    warnings.showwarning = _one_line_warning
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("al-loop: warning: %(message)s (%(name)s)"))
    for name in ("rasterio", "pyogrio", "fiona"):
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate = [handler], False
        logger.setLevel(logging.WARNING)


def _flag_of(args: argparse.Namespace, param: str | None) -> str:
    """' (the flag: --x)' for the library parameter an error names, where this command has one."""
    if not param:
        return ""
    command = _command_parser(build_parser(), args)
    flags = [o for a in command._actions if a.dest == param for o in a.option_strings if o.startswith("--")]
    return f" (the flag: {flags[0]})" if flags else ""


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments; a flag the command does not know is refused by the command's own parser,
    which knows its flags and can suggest the nearest."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the command (or nested command, ``weights download``) ``args`` ran."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    command = commands[args.command]
    nested = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
    if nested and getattr(args, nested[0].dest, None) in nested[0].choices:
        command = nested[0].choices[getattr(args, nested[0].dest)]
    return command


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    _quiet_libraries()
    command = COMMANDS[args.command]
    try:
        return command.run(args) or 0
    except tuple(kind for kind, _, _ in EXIT_CODES) as exc:
        code, message = next((code, message) for kind, code, message in EXIT_CODES if isinstance(exc, kind))
        print(message.format(exc) + _flag_of(args, getattr(exc, "param", None)), file=sys.stderr)
        return code
