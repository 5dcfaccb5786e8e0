"""Flags shared by several commands, and the settings they resolve to.

Every setting's flag is built from :mod:`al_loop.settings` (its help, choices and type), and
:func:`settings_of` resolves a command's flags once (flag, environment, workspace, default).
Nothing here imports torch: the parser is built from these at every ``al-loop --help``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from al_loop.errors import UsageError
from al_loop.settings import NAMES, Settings, flag_of, help_for, resolve, setting_fields

# A setting whose flag is not --<name>.
LOOP_SETTINGS = ("encoder", "model", "checkpoint", "precision", "runtime", "cache_dir")


def settings_flags(parser: argparse.ArgumentParser, *names: str, **helps: str) -> None:
    """A flag per setting, its help, choices and type from :mod:`al_loop.settings`; not given = None,
    so the resolver can tell a flag from a default. ``helps`` adds a command's own words."""
    by_name = {f.name: f for f in setting_fields()}
    for name in names:
        meta = by_name[name].metadata
        extra = {"choices": meta["choices"]} if meta["choices"] else {}
        if meta["kind"] in (int, float):
            extra["type"] = meta["kind"]
        parser.add_argument(flag_of(name), dest=name, default=None,
                            help=(helps[name] + "; " if name in helps else "") + help_for(name), **extra)


class _Deprecated(argparse.Action):
    """An old spelling that still works for one release, with a word on stderr."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"al-loop: warning: {option_string} is deprecated and goes in the next release; use {self.new}",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def deprecated(parser: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs) -> None:
    parser.add_argument(old, dest=dest, action=_Deprecated, new=new, help=f"deprecated spelling of {new}", **kwargs)


def workspace_flag(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument("--workspace", type=Path, default=None, help=(help + "; " if help else "") + help_for("workspace"))


def json_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def quiet_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def tile_size_flags(parser: argparse.ArgumentParser, what: str, size: int | None = 1024, overlap: int | None = 256,
                    default: str = "") -> None:
    parser.add_argument("--tile-size", type=int, default=size, help=f"tile side in pixels for {what} "
                        f"(default {default or size})")
    deprecated(parser, "--size", "--tile-size", "tile_size", type=int)
    parser.add_argument("--overlap", type=int, default=overlap, help="overlap between neighbouring tiles in pixels for "
                        f"{what} (default {overlap if overlap is not None else 'a quarter of the tile side'})")


def export_flags(parser: argparse.ArgumentParser) -> None:
    """The export flags, on ``export`` and on ``map`` (one meaning each)."""
    parser.add_argument("--jmars", type=Path, metavar="CSV", help="write the pits as a CSV JMARS reads as a layer "
                        "(latitude, east longitude, diameter, every other column)")
    parser.add_argument("--craterstats", type=Path, metavar="DIAM", help="write the pits' diameters and the mapped "
                        "area as a craterstats .diam file")
    parser.add_argument("--sfd", type=Path, metavar="PNG", help="plot the pits' size-frequency distribution "
                        "(cumulative and differential, per km2)")


def settings_of(args: argparse.Namespace) -> Settings:
    """The command's settings: its flags over the environment over its workspace's saved settings
    (where the command takes a workspace) over the defaults."""
    from al_loop.loop.workspace import find_workspace, saved_settings

    given = {name: getattr(args, name) for name in NAMES if getattr(args, name, None) is not None}
    if isinstance(given.get("workspace"), Path):
        given["workspace"] = str(given["workspace"])
    layer = {}
    if hasattr(args, "workspace") and args.command != "init":  # init makes the workspace: nothing saved yet
        named = resolve({"workspace": given.get("workspace")})
        if named.source("workspace") == "default" and (found := find_workspace(Path.cwd(), Path(named.workspace))):
            given["workspace"] = str(found)  # run from inside a workspace: that one, as if named
        layer = saved_settings(given.get("workspace") or named.workspace)
    return resolve(given, layer)


def workspace_of(settings: Settings):
    """The :class:`~al_loop.loop.workspace.Workspace` the settings name (not checked to exist)."""
    from al_loop.loop.workspace import Workspace

    return Workspace(settings.workspace)


def token_of(settings: Settings) -> str:
    """The Label Studio token, or the error that says which flag or variable gives it."""
    if not settings.label_studio_api_key:
        raise UsageError("no Label Studio token: pass --token or set LABEL_STUDIO_API_KEY (Account & Settings > Access Token)")
    return settings.label_studio_api_key
