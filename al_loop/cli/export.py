"""``al-loop export``: a pit layer as a JMARS CSV, a craterstats ``.diam`` file and a size-frequency
plot with its table. The work is :func:`al_loop.science.exports.write_exports` (``map``'s
--jmars/--craterstats/--sfd call it too); :func:`show` prints what it did."""
from __future__ import annotations

from pathlib import Path

from al_loop.cli.options import export_flags
from al_loop.cli.output import warn
from al_loop.errors import UsageError


def add_parser(sub) -> None:
    export = sub.add_parser(
        "export", help="a pit layer as a JMARS CSV, a craterstats .diam file and a size-frequency plot",
        description="Reads a pit layer in any Mars CRS with a diameter column (pits_lonlat of `al-loop map`, "
        "measure's output, or any such layer; a layer without a CRS is refused) and writes what planetary tools "
        "read. The searched area (for .diam and the size-frequency) is the map's valid pixels (its valid_<product> "
        "layers), else its tile footprints, or --area-km2. The size-frequency uses the CATWG root-2 bins from 1 km "
        "with exact Poisson 1-sigma limits (Gehrels 1986) and marks the completeness limit; its table is written "
        "beside the plot as a CSV of the same stem. Fitting isochrons is craterstats' job (it reads the .diam).",
    )
    export.add_argument("pits", type=Path, metavar="PITS.gpkg", help="the GeoPackage holding the pit layer")
    export.add_argument("--layer", default="pits_lonlat", help="the pit layer (default pits_lonlat)")
    export.add_argument("--area-km2", type=float, help="the area searched, in km2 (default: the map's valid pixels, "
                        "else its tile footprints)")
    export_flags(export)


def run(args) -> int:
    from al_loop.science.exports import write_exports

    if not (args.jmars or args.craterstats or args.sfd):
        raise UsageError("nothing to write: give --jmars, --craterstats and/or --sfd")
    result = write_exports(args.pits, args.layer, jmars=args.jmars, diam=args.craterstats, sfd=args.sfd,
                           area_km2=args.area_km2)
    show(result)
    return 0


def show(result) -> None:
    """What an export wrote, from what area, and its warnings (``export`` and ``map`` alike)."""
    for message in result.warnings:
        warn(message)
    if result.area is not None:
        print(f"searched area {result.area.area_km2:.4g} km2 ({result.area.source})")
    for path in result.written:
        print(f"wrote {path}")
