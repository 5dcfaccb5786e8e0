"""``al-loop export``: a pit layer as a JMARS CSV, a craterstats ``.diam`` file and a size-frequency plot.

:func:`write_exports` is also ``map``'s (its --jmars/--craterstats/--sfd flags); it is the last
piece of domain work in the command line and goes to ``al_loop.science.exports`` (issue 37)."""
from __future__ import annotations

from pathlib import Path

from al_loop.cli.options import export_flags
from al_loop.errors import UsageError


def add_parser(sub) -> None:
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
    export_flags(export)


def run(args) -> int:
    if not (args.jmars or args.craterstats or args.sfd):
        raise UsageError("nothing to write: give --jmars, --craterstats and/or --sfd")
    for path in write_exports(args.pits, args.layer, args.jmars, args.craterstats, args.sfd, args.area_km2):
        print(f"wrote {path}")
    return 0


def write_exports(gpkg: Path, layer: str, jmars: Path | None, diam: Path | None, sfd: Path | None,
                  area_km2: float | None = None) -> list[Path]:
    """Every export asked for, from one pit layer; the paths written."""
    from al_loop.science import exports

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
