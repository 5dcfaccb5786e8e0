"""``al-loop tile``: cut map-projected products into 8-bit tiles with a manifest."""
from __future__ import annotations

from pathlib import Path

from al_loop.cli.options import quiet_flag, tile_size_flags
from al_loop.cli.output import print_problems


def add_parser(sub) -> None:
    tile = sub.add_parser(
        "tile", help="cut map-projected products (HiRISE .LBL/.JP2, GeoTIFF, PDS, ISIS) into 8-bit tiles with a manifest",
        description="Reads each product through GDAL (a HiRISE .LBL opens the JP2 it names), converts it once to a "
        "tiled GeoTIFF by column strips when windows would be slow to read, applies one contrast stretch per product, "
        "and writes PNG tiles (mostly-null tiles skipped) under OUT/<product id>/, a manifest.json tying every tile to "
        "its product (window, affine, CRS, stretch, content hash) and tiles.gpkg with the tile footprints. A product "
        "that cannot be read is reported; the others still complete.",
    )
    tile.add_argument("products", type=Path, nargs="+", metavar="PRODUCT", help="product files (.LBL, .tif, .IMG, "
                      ".cub, ...), or folders of them (as `al-loop fetch` writes them: every product inside)")
    tile.add_argument("--out", type=Path, required=True, help="folder to write the tiles and the manifest to (import it with `al-loop init --images`)")
    tile_size_flags(tile, "the tiles")
    quiet_flag(tile)


def run(args) -> int:
    from al_loop.data.tiling import tile_products

    report = tile_products(args.products, args.out, args.tile_size, args.overlap, progress=not args.quiet)
    print_problems(report.warnings, report.failures)
    for pid, entry in report.entries.items():
        print(f"{pid}: {len(entry.tiles)} tiles of {entry.tile_size} px (overlap {entry.overlap}) in {args.out / pid}, "
              f"{entry.skipped_null} mostly-null tiles skipped")
    if report.manifest:
        print(f"manifest: {report.manifest}; footprints: {args.out / 'tiles.gpkg'}")
    return 1 if report.failures else 0
