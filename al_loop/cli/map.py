"""``al-loop map``: map the pits of whole products with a trained decoder."""
from __future__ import annotations

import argparse
from pathlib import Path

from al_loop.cli.options import export_flags, quiet_flag, settings_flags, settings_of, tile_size_flags
from al_loop.cli.output import print_problems
from al_loop.errors import UsageError
from al_loop.models.pits import MIN_OBJECT_SCORE, THRESHOLD


def _probability(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a probability strictly between 0 and 1")
    return value


def add_parser(sub) -> None:
    mapping = sub.add_parser(
        "map", help="map the pits of whole products with a trained decoder: GeoPackage (+ GeoJSON, probabilities, quicklook)",
        description="Runs the decoder over every tile of each product (tiled with `al-loop tile` into --tiles, or tiled "
        "there now), blends the probabilities across tile overlaps, and writes one polygon per pit with its area, "
        "perimeter, equivalent diameter, centroid (planetocentric lat, east lon, native x/y), confidence and review "
        "status: a layer per product in its own CRS, one layer of all pits in Mars lon/lat (IAU_2015:49900) and the "
        "tile footprints, in one GeoPackage. With --workspace, the workspace's latest decoder, which is always one "
        "scored on the validation tiles. A product that cannot be mapped is reported; the others still complete.",
    )
    mapping.add_argument("products", type=Path, nargs="+", metavar="PRODUCT", help="product files (.LBL, .tif, ...)")
    source = mapping.add_mutually_exclusive_group(required=True)
    source.add_argument("--workspace", type=Path, help="an al-loop workspace: its latest (evaluated) decoder, and its "
                        "tasks for review status")
    source.add_argument("--decoder", type=Path, help="a decoder file (`al-loop train --out`, or a workspace round's .pt)")
    mapping.add_argument("--out", type=Path, required=True, help="the GeoPackage to write (pits.gpkg)")
    settings_flags(mapping, "label_studio_api_key", label_studio_api_key="with --workspace, the expert's submitted "
                   "masks replace the decoder's on their tiles")
    mapping.add_argument("--tiles", type=Path, help="the tile folder of `al-loop tile` (default: <out>-tiles beside --out)")
    mapping.add_argument("--geojson", type=Path, help="also write every pit as GeoJSON in Mars lon/lat to this file")
    mapping.add_argument("--json", nargs="?", const=True, default=False, metavar="SUMMARY.json", help="the run's "
                         "summary as JSON (pits, valid area searched and the coverage record per product, size "
                         "limits, radiometry, outputs, warnings): printed, or written to SUMMARY.json when a file "
                         "is named")
    mapping.add_argument("--catalogue", type=Path, metavar="CSV", help="MGC3 or any lat/lon CSV: each product's "
                         "coverage record counts the entries inside the area it searched and those a pit matched "
                         "(compare's rule), its recall against the catalogue")
    mapping.add_argument("--probabilities", type=Path, help="folder to write a uint8 probability GeoTIFF per product to")
    mapping.add_argument("--no-quicklook", action="store_true", help="skip the quicklook PNG per product")
    export_flags(mapping)
    mapping.add_argument("--overlay", type=Path, help="a vector file (GeoPackage, GeoJSON, shapefile) drawn over each "
                         "quicklook: expert boxes, catalogue points")
    mapping.add_argument("--threshold", type=_probability, default=THRESHOLD, help="a pixel is pit where the blended "
                         f"probability reaches this (default {THRESHOLD})")
    mapping.add_argument("--drop-low-score", action="store_true", help="leave out objects whose object_score (mean "
                         f"probability x fit to the training pits' sizes) is under {MIN_OBJECT_SCORE}, instead of "
                         "writing them with flag low_score (measured on held-out boxes: the methods page)")
    mapping.add_argument("--split-objects", action="store_true", help="cut merged blobs at their probability saddles "
                         "(a seeded watershed); off by default: on held-out boxes it cut terrain into false pits")
    mapping.add_argument("--min-area-m2", type=float, help="leave out pits smaller than this (default: half the 5th "
                         "percentile of the decoder's training pits; 0: no limit)")
    mapping.add_argument("--max-area-m2", type=float, help="leave out pits larger than this (default: twice the "
                         "decoder's largest training pit; inf: no limit)")
    tile_size_flags(mapping, "products tiled now", None, None, "the side of the decoder's training tiles, so pits "
                    "look the size it learned; 1024 when it records none")
    settings_flags(mapping, "cache_dir", "runtime")
    quiet_flag(mapping)


def run(args) -> int:
    import json

    from al_loop.cli.export import show
    from al_loop.mapping.run import MapJob, map_products
    from al_loop.science.exports import write_exports

    tiles = args.tiles or args.out.with_name(f"{args.out.stem}-tiles")
    s = settings_of(args)
    token = s.label_studio_api_key if args.workspace else None
    if args.overlay is not None and not args.overlay.is_file():
        raise UsageError(f"--overlay {args.overlay}: no such file")
    job = MapJob(args.products, args.out, tiles, args.decoder, args.workspace, args.geojson, args.probabilities,
                 not args.no_quicklook, args.tile_size, args.overlap, s.cache_location, not args.quiet, token, s,
                 args.threshold, args.min_area_m2, args.max_area_m2, args.overlay, args.catalogue,
                 split_objects=args.split_objects, drop_low_score=args.drop_low_score)
    report = map_products(job)
    print_problems(report.warnings, report.failures)
    for pid, count in report.pits.items():
        area = report.valid_area_m2.get(pid)
        searched = f" in {area / 1e6:.4g} km2 of valid pixels" if area is not None and area == area else ""
        print(f"{pid}: {count} pits{searched}{_left_out_line(report, pid)}{_recall_line(report, pid)}"
              + _flagged_line(report.flagged.get(pid, 0)))
    for path in report.outputs:
        print(f"wrote {path}")
    if report.pits and (args.jmars or args.craterstats or args.sfd):
        exported = write_exports(args.out, "pits_lonlat", jmars=args.jmars, diam=args.craterstats, sfd=args.sfd)
        show(exported)
        report.outputs += exported.written
    if args.json is True:
        print(json.dumps(report.summary(), indent=2))
    elif args.json:
        Path(args.json).write_text(json.dumps(report.summary(), indent=2))
        print(f"wrote {args.json}")
    if args.workspace and report.pits:
        _record(args.workspace, args.out, report)
    return 1 if report.failures else 0


def _flagged_line(flagged: int) -> str:
    if not flagged:
        return ""
    return (f"; {flagged} of them flagged low_score (object_score under {MIN_OBJECT_SCORE}: faint or far from the "
            "training pits' sizes; --drop-low-score leaves them out)")


def _record(workspace: Path, out: Path, report) -> None:
    """The map in the workspace's list of outputs, for `al-loop report`."""
    from al_loop.loop.outputs import record_output

    quicklook = next((p for p in report.outputs if p.suffix.lower() == ".png"), None)
    counts = {"pits": sum(report.pits.values()), "products": len(report.pits)}
    record_output(workspace, "map", ", ".join(report.pits), [out, *report.outputs], counts, quicklook)


def _recall_line(report, product_id: str) -> str:
    record = report.coverage.get(product_id)
    if record is None or record.catalogue_in_footprint is None:
        return ""
    return f"; {record.catalogue_found} of {record.catalogue_in_footprint} catalogue entries in it found"


def _left_out_line(report, product_id: str) -> str:
    small, large = report.left_out.get(product_id, (0, 0))
    low, high = report.limits.get(product_id, (None, None))
    if low is None and high is None:
        return ""
    span = f"{low or 0:.3g}-{high if high is not None else float('inf'):.3g} m2"
    return f" within {span}" + (f" ({small} smaller and {large} larger left out)" if small or large else "")
