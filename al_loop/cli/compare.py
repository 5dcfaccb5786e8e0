"""``al-loop compare``: cross-match a pit map with a catalogue (MGC3 or any lat/lon CSV)."""
from __future__ import annotations

from pathlib import Path

from al_loop.cli.output import warn


def add_parser(sub) -> None:
    compare = sub.add_parser(
        "compare", help="cross-match a pit map with a catalogue (MGC3 or any lat/lon CSV): matched, new, missed",
        description="One-to-one matching on the Mars sphere (two pits never match one entry): every pit is matched "
        "(with the catalogue's id, type, priority, diameter and depth, and every field of its own layer) or new, "
        "and flagged ambiguous when a second entry was in range; every catalogue entry inside a mapped product's "
        "valid footprint with no pit paired is missed. By default a pit and an entry may pair within the pit's "
        "diameter but at least 150 m, plus the entry's written rounding (the methods page says why). Footprints "
        "come from the map's valid_<product> or tiles_<product> layers, or from --product. The pit layer may be in "
        "any Mars CRS GDAL knows (measure's output included). MGC3's CSV is read by column position (its header "
        "is shifted by one column).",
    )
    compare.add_argument("pits", type=Path, metavar="PITS.gpkg", help="the map (its pits_lonlat layer), or any file "
                         "with one pit layer in a Mars CRS")
    compare.add_argument("--layer", help="the pit layer (default: pits_lonlat, else the file's one pit layer)")
    compare.add_argument("--catalogue", type=Path, required=True, help="MGC3's CSV, or a CSV with lat and lon columns")
    compare.add_argument("--radius-m", type=float, default=None, help="one fixed largest distance, in metres, at "
                         "which a pit and an entry are the same feature (default: the rule above, from each pit's "
                         "size and each entry's precision)")
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
    report = compare_map(args.pits, args.catalogue, args.out, summary, radius_m=args.radius_m, products=args.product,
                         layer=args.layer)
    if args.json is True:
        print(json.dumps(report.summary(), default=str))
        return 0
    for message in report.warnings:
        warn(message)
    counts = report.counts
    print(f"{counts['matched']} matched, {counts['new']} new, {counts['missed']} missed (catalogue entries in the "
          f"mapped footprints with no pit paired); {counts.get('ambiguous', 0)} ambiguous (a second candidate in "
          f"range); radius: {report.rule.describe()}")
    for path in report.outputs:
        print(f"wrote {path}")
    return 0
