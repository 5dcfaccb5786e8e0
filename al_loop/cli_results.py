"""The commands around a pit map, from the products in to what a scientist publishes out:
``fetch`` (HiRISE products by ID), ``compare`` (against a catalogue such as MGC3) and
``export`` (JMARS CSV, craterstats ``.diam``, size-frequency plot). ``cli`` registers them;
they live here so the loop's commands and these read apart."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from al_loop.errors import UsageError


def add_fetch(sub) -> None:
    fetch = sub.add_parser(
        "fetch", help="download HiRISE products by ID from the PDS archive (resumable, checked, a few at a time)",
        description="A HiRISE RDR ID (ESP_012600_1655, PSP_..., optionally _RED or _COLOR; RED by default) is read "
        "from RDR/{ESP|PSP}/ORB_xxxx00_xxxx99/ID/ID_RED.{JP2,LBL} under the archive. Each file lands under a "
        "temporary name, resumes after a dropped connection (HTTP Range), is checked against the server's size "
        "and renamed only when whole; files already whole are skipped. A product that fails is named; the others "
        "complete (exit 1).",
    )
    fetch.add_argument("ids", nargs="*", metavar="PRODUCT_ID", help="HiRISE product IDs")
    fetch.add_argument("--from", dest="id_file", type=Path, metavar="FILE", help="a file of IDs, one a line (# comments)")
    fetch.add_argument("--out", type=Path, required=True, help="folder to put OUT/<ID>_RED/<ID>_RED.{JP2,LBL} in")
    fetch.add_argument("--base-url", help="the archive's root (default $AL_LOOP_PDS_URL, else the HiRISE "
                       "PDS archive at the University of Arizona)")
    fetch.add_argument("--parallel", type=int, default=3, help="products downloaded at once (default 3)")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_fetch(args) -> int:
    import os

    from al_loop.data import archive

    ids = list(args.ids) + (archive.read_id_file(args.id_file) if args.id_file else [])
    if not ids:
        raise UsageError("no product ID: give IDs, or --from FILE")
    if args.parallel < 1:
        raise UsageError("--parallel must be at least 1")
    base = args.base_url or os.environ.get("AL_LOOP_PDS_URL") or archive.PDS_BASE_URL
    report = archive.fetch_products(ids, args.out, base, args.parallel, progress=not args.quiet)
    for failure in report.failures:
        print(f"al-loop: error: {failure}", file=sys.stderr)
    for name, paths in report.products.items():
        label = next((p for p in paths if p.suffix.upper() == ".LBL"), paths[0])
        print(f"{name}: {label}")
    if report.skipped:
        print(f"{len(report.skipped)} file(s) already whole, not downloaded again")
    return 1 if report.failures else 0


def add_compare(sub) -> None:
    compare = sub.add_parser(
        "compare", help="cross-match a pit map with a catalogue (MGC3 or any lat/lon CSV): matched, new, missed",
        description="Great-circle matching on the Mars sphere: every pit is matched (with the catalogue's id, type, "
        "priority, diameter and depth) or new; every catalogue entry inside a mapped product's footprint with no "
        "pit within the radius is missed. Footprints come from the map's tiles_<product> layers, or from "
        "--product. MGC3's CSV is read by column position (its header is shifted by one column).",
    )
    compare.add_argument("pits", type=Path, metavar="PITS.gpkg", help="the map (its pits_lonlat layer), or any file "
                         "with one pit layer in Mars lon/lat")
    compare.add_argument("--catalogue", type=Path, required=True, help="MGC3's CSV, or a CSV with lat and lon columns")
    compare.add_argument("--radius-m", type=float, default=300.0, help="the largest distance at which a pit and an "
                         "entry are the same feature, in metres (default 300: MGC3 positions are good to a few "
                         "hundred metres)")
    compare.add_argument("--product", type=Path, nargs="+", default=(), metavar="PRODUCT", help="products whose valid "
                         "pixels are the footprints (for a pit layer without tiles_<product> layers)")
    compare.add_argument("--out", type=Path, required=True, help="GeoPackage to write: pits_compared and "
                         "catalogue_missed, in Mars lon/lat")
    compare.add_argument("--json", nargs="?", const=True, default=False, metavar="SUMMARY.json", help="the counts and "
                         "rows as JSON: printed, or written to SUMMARY.json when a file is named")


def cmd_compare(args) -> int:
    import json

    from al_loop.science.compare import compare_map

    summary = Path(args.json) if isinstance(args.json, str) else None
    report = compare_map(args.pits, args.catalogue, args.out, summary, radius_m=args.radius_m, products=args.product)
    if args.json is True:
        print(json.dumps(report.summary(), default=str))
        return 0
    for message in report.warnings:
        warn(message)
    counts = report.counts
    print(f"{counts['matched']} matched, {counts['new']} new, {counts['missed']} missed (catalogue entries in the "
          f"mapped footprints with no pit within {args.radius_m:g} m)")
    for path in report.outputs:
        print(f"wrote {path}")
    return 0


def add_measure(sub) -> None:
    measure = sub.add_parser(
        "measure", help="morphometry and shadow depth of any polygon layer over a product (expert or catalogue outlines)",
        description="Each polygon, in the product's CRS: diameter_m, major/minor axes, axis azimuth, circularity, and "
        "from the label's sun and view geometry (HiRISE VIEWING_PARAMETERS) the shadow inside it along the sun: "
        "shadow_length_m, depth_m, depth_is_minimum, depth_diameter. `map` writes the same columns for its pits.",
    )
    measure.add_argument("polygons", type=Path, metavar="POLYGONS", help="a vector file of outlines (any CRS GDAL knows)")
    measure.add_argument("product", type=Path, metavar="PRODUCT", help="the product they lie on (.LBL for the sun)")
    measure.add_argument("--layer", help="the layer of POLYGONS (default: its only one)")
    measure.add_argument("--out", type=Path, required=True, help="GeoPackage to write (layer measured)")


def cmd_measure(args) -> int:
    from al_loop.science.pit_measures import measure_layer

    report = measure_layer(args.polygons, args.product, args.out, args.layer)
    for message in report.warnings:
        warn(message)
    depths = [r["depth_m"] for r in report.rows if r["depth_m"] == r["depth_m"]]
    print(f"{len(report.rows)} outlines measured, {len(depths)} with a depth from their shadow; wrote {report.out}")
    return 0


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


def warn(message: str) -> None:
    print(f"al-loop: warning: {message}", file=sys.stderr)
