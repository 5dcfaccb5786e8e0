"""``al-loop sample``: generated Mars-like tiles with pits (a YOLO set), or a whole sample product."""
from __future__ import annotations

from pathlib import Path

from al_loop.cli.options import deprecated
from al_loop.errors import UsageError


def add_parser(sub) -> None:
    sample = sub.add_parser(
        "sample", help="generate Mars-like sample data: tiles with pits (YOLO format), or a whole product (--product)",
        description="Write generated Mars-like tiles with pits and skylights and their boxes as a YOLO dataset; or, "
        "with --product DIR, a small georeferenced HiRISE-style product (JP2 + PDS3 label) with its expert boxes "
        "(GeoJSON) and a YOLO set to train a decoder on: the map path end to end without downloading anything.",
    )
    sample.add_argument("directory", type=Path, nargs="?", help="where to write data.yaml, train/ and valid/")
    sample.add_argument("--product", type=Path, metavar="DIR", help="write a sample product, its expert boxes and a "
                        "training set under DIR instead")
    sample.add_argument("--train", type=int, default=40, help="tiles in train/ (default 40)")
    sample.add_argument("--valid", type=int, default=10, help="tiles in valid/ (default 10)")
    sample.add_argument("--tile-size", type=int, default=512, help="tile side in pixels (default 512)")
    deprecated(sample, "--size", "--tile-size", "tile_size", type=int)
    sample.add_argument("--seed", type=int, default=0, help="random seed of the generator (default 0)")


def run(args) -> int:
    from al_loop.data.synthetic import write_yolo_dataset

    if (args.directory is None) == (args.product is None):
        raise UsageError("give a DIRECTORY for a YOLO set of tiles, or --product DIR for a sample product")
    if args.product is not None:
        return _sample_product(args.product, args.seed)
    if min(args.train, args.valid) < 1 or args.tile_size < 64:
        raise UsageError("--train and --valid must be at least 1 and --tile-size at least 64")
    root = write_yolo_dataset(args.directory, args.train, args.valid, args.seed, args.tile_size)
    print(f"{args.train} train + {args.valid} valid generated tiles with their boxes in {root}")
    return 0


def _sample_product(folder: Path, seed: int) -> int:
    from al_loop.data.sample_products import write_sample_product

    paths = write_sample_product(folder, seed)
    print(f"sample product {paths['product']} (0.25 m/px, Mars equirectangular), its expert boxes {paths['boxes']}, "
          f"and a training set {paths['training']}. Map it without weights:")
    print(f"  al-loop train --dataset {paths['training']} --encoder filterbank --out {folder}/decoder.pt")
    print(f"  al-loop map {paths['product']} --decoder {folder}/decoder.pt --out {folder}/pits.gpkg "
          f"--overlay {paths['boxes']}")
    return 0
