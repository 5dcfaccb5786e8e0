"""``al-loop report``: the workspace's progress page, written as files and its path printed.

The page and its figures are :mod:`al_loop.report`'s; this module only says where it went."""
from __future__ import annotations

from pathlib import Path

from al_loop.cli.options import settings_of, workspace_flag, workspace_of


def add_parser(sub) -> None:
    report = sub.add_parser(
        "report", help="a static progress page of a workspace: learning curve, rounds, types, decoders, maps",
        description="Writes DIR/index.html with its figures beside it (no server, no internet: it opens from the "
        "file): the learning curve with what each point was scored on, per-type metrics, each round's strategy, "
        "batch and decoder agreement, the decoders, and the maps and candidate lists recorded in the workspace. "
        "It reads the workspace only; Label Studio need not be running.",
    )
    workspace_flag(report)
    report.add_argument("--out", type=Path, metavar="DIR", help="where to write the page (default WORKSPACE/report)")


def run(args) -> int:
    from al_loop.report import write_report

    s = settings_of(args)
    index = write_report(workspace_of(s), s, args.out)
    print(f"report: {index}")
    return 0
