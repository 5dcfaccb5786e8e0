"""``al-loop compare``: cross-match a pit map with a catalogue (MGC3 or any lat/lon CSV)."""
from __future__ import annotations

from pathlib import Path

from al_loop.cli.output import warn


def add_parser(sub) -> None:
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


def run(args) -> int:
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
