"""``al-loop measure``: morphometry and shadow depth of any polygon layer over a product."""
from __future__ import annotations

from pathlib import Path

from al_loop.cli.output import warn


def add_parser(sub) -> None:
    measure = sub.add_parser(
        "measure", help="morphometry and shadow depth of any polygon layer over a product (expert or catalogue outlines)",
        description="Each polygon, in the product's CRS: diameter_m (equivalent circle), feret_max_m, major/minor "
        "axes, axis_ratio, solidity, axis azimuth, and from the label's sun and view (HiRISE VIEWING_PARAMETERS) the "
        "apparent depth from the shadow: shadow_length_m, depth_m, depth_err_m, depth_is_minimum, d_over_D, "
        "depth_method, depth_note. `map` writes the same columns for its pits (the methods page says how).",
    )
    measure.add_argument("polygons", type=Path, metavar="POLYGONS", help="a vector file of outlines (any CRS GDAL knows)")
    measure.add_argument("product", type=Path, metavar="PRODUCT", help="the product they lie on (.LBL for the sun)")
    measure.add_argument("--layer", help="the layer of POLYGONS (default: its only one)")
    measure.add_argument("--out", type=Path, required=True, help="GeoPackage to write (layer measured)")


def run(args) -> int:
    from al_loop.science.pit_measures import measure_layer

    report = measure_layer(args.polygons, args.product, args.out, args.layer)
    for message in report.warnings:
        warn(message)
    depths = [r["depth_m"] for r in report.rows if r["depth_m"] == r["depth_m"]]
    print(f"{len(report.rows)} outlines measured, {len(depths)} with a depth from their shadow; wrote {report.out}")
    return 0
