"""The commands around a pit map, from the products in to what a scientist publishes out:
``fetch`` (HiRISE products by ID), ``compare`` (against a catalogue such as MGC3) and
``export`` (JMARS CSV, craterstats ``.diam``, size-frequency plot). ``cli`` registers them;
they live here so the loop's commands and these read apart."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from al_loop.errors import UsageError


def add_export_flags(parser: argparse.ArgumentParser) -> None:
    """The export flags, on ``export`` and on ``map`` (one meaning each)."""
    parser.add_argument("--jmars", type=Path, metavar="CSV", help="write the pits as a CSV JMARS reads as a layer "
                        "(latitude, east longitude, diameter, every other column)")
    parser.add_argument("--craterstats", type=Path, metavar="DIAM", help="write the pits' diameters and the mapped "
                        "area as a craterstats .diam file")
    parser.add_argument("--sfd", type=Path, metavar="PNG", help="plot the pits' size-frequency distribution "
                        "(cumulative and differential, per km2)")


def add_export(sub) -> None:
    export = sub.add_parser(
        "export", help="a pit layer as a JMARS CSV, a craterstats .diam file and a size-frequency plot",
        description="Reads a pit layer in Mars lon/lat with a diameter column (pits_lonlat of `al-loop map`, or any "
        "such layer) and writes what planetary tools read. The searched area (for .diam and the plot) is the "
        "union of the map's tile footprints, or --area-km2.",
    )
    export.add_argument("pits", type=Path, metavar="PITS.gpkg", help="the GeoPackage holding the pit layer")
    export.add_argument("--layer", default="pits_lonlat", help="the pit layer (default pits_lonlat)")
    export.add_argument("--area-km2", type=float, help="the area searched, in km2 (default: the union of the map's "
                        "tile footprints)")
    add_export_flags(export)


def cmd_export(args) -> int:
    if not (args.jmars or args.craterstats or args.sfd):
        raise UsageError("nothing to write: give --jmars, --craterstats and/or --sfd")
    for path in write_exports(args.pits, args.layer, args.jmars, args.craterstats, args.sfd, args.area_km2):
        print(f"wrote {path}")
    return 0


def write_exports(gpkg: Path, layer: str, jmars: Path | None, diam: Path | None, sfd: Path | None,
                  area_km2: float | None = None) -> list[Path]:
    """Every export asked for, from one pit layer; the paths written."""
    from al_loop.mapping import exports

    pits = exports.read_pits(gpkg, layer)
    written = [exports.write_jmars_csv(jmars, pits)] if jmars else []
    if diam or sfd:
        area = area_km2 if area_km2 is not None else exports.mapped_area_km2(gpkg)
        if not area or area <= 0:
            raise UsageError(f"{gpkg} holds no tile footprints to measure the searched area: give --area-km2")
        if diam:
            written.append(exports.write_diam(diam, pits, area))
        if sfd:
            written.append(exports.plot_size_frequency(sfd, pits, area, title=Path(gpkg).stem))
    return written


def warn(message: str) -> None:
    print(f"al-loop: warning: {message}", file=sys.stderr)
