"""Product -> tiles -> pit map: throughput and peak memory, streamed against the naive way.

Builds two HiRISE-style products (lossless JP2 + PDS3 label) by mosaicking real HiRISE
tiles of ../shared/data/hirise-pits (generated tiles where absent), then, each in a fresh
process so peak RSS is its own:

- tile, streamed: `al-loop tile`'s path (JP2 -> tiled GeoTIFF by column strips -> tiles);
- tile, naive: the whole product read at once, tiles cut from memory;
- map, streamed: `al-loop map`'s path on cached embeddings (rolling band of tile rows);
- map, naive: the same decoder outputs blended into whole-product buffers, polygonized at once.

    python bench/map_product.py [--sides 8x3,8x12] [--out /tmp/map-bench]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from al_loop.models.engines import cpu_summary as cpu  # the CPU's model and the flags that decide speed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HIRISE = Path(os.environ.get("HIRISE_PITS_DIR", ROOT.parent / "shared" / "data" / "hirise-pits"))
SIZE, OVERLAP = 1024, 256


def source_tiles() -> list[np.ndarray]:
    from PIL import Image

    images = sorted((HIRISE / "valid" / "images").glob("*.jpg"))
    if images:
        return [np.asarray(Image.open(p).convert("L")) for p in images]
    from al_loop.data.synthetic import generate_tile

    return [generate_tile(i, 900).image for i in range(38)]


def build(out: Path, columns: int, rows: int) -> Path:
    from al_loop.data import sample_products as sp

    tiles = source_tiles()
    chosen = [tiles[i % len(tiles)] for i in range(columns * rows)]
    pixels = sp.mosaic(chosen, columns)
    return sp.write_hirise_rdr(pixels, out / f"P{columns}x{rows}", f"BENCH_{columns}x{rows}", -10.0, 130.0)


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: ru_maxrss would carry the parent's peak across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(mode: str, label: Path, work: Path, decoder: Path) -> dict:
    """One measurement, in this (fresh) process."""
    started = time.perf_counter()
    if mode == "tile-stream":
        from al_loop.data.tiling import tile_products

        report = tile_products([label], work / "tiles-stream", SIZE, OVERLAP, progress=False)
        tiles = sum(len(e.tiles) for e in report.entries.values())
    elif mode == "tile-naive":
        tiles = naive_tiles(label, work / "tiles-naive")
    elif mode in ("map-stream", "map-naive"):
        tiles = run_map(label, work, decoder, naive=mode == "map-naive")
    else:
        raise SystemExit(f"unknown mode {mode}")
    return {"mode": mode, "seconds": time.perf_counter() - started, "tiles": tiles, "peak_rss_mb": peak_rss_mb()}


def naive_tiles(label: Path, out: Path) -> int:
    """Whole image in memory, then windows cut from it (what a first script does)."""
    from PIL import Image

    from al_loop.data.products import open_product, open_raster, valid_mask
    from al_loop.data.tiling import tile_windows

    product = open_product(label)
    with open_raster(label) as src:
        image = src.read(1)
    valid = valid_mask(image, product.null)
    lo, hi = np.percentile(image[valid][:: max(1, valid.sum() // 1_000_000)], (0.5, 99.5))
    out.mkdir(parents=True, exist_ok=True)
    windows = tile_windows(product.width, product.height, SIZE, OVERLAP)
    for w in windows:
        crop = image[w.row : w.row + w.height, w.col : w.col + w.width].astype(np.float32)
        grey = np.where(valid[w.row : w.row + w.height, w.col : w.col + w.width], np.clip((crop - lo) / (hi - lo), 0, 1) * 254 + 1, 0)
        Image.fromarray(grey.astype(np.uint8)).save(out / f"r{w.row}_c{w.col}.png")
    return len(windows)


def run_map(label: Path, work: Path, decoder: Path, naive: bool) -> int:
    from al_loop.mapping import blend, run

    if naive:  # one band as tall as the product: whole-image buffers, polygonized in one pass
        from al_loop.data.products import open_product

        height = open_product(label).height
        run.RowBlender = lambda width, band_height, ramp: blend.RowBlender(width, height, ramp)
    job = run.MapJob([label], work / ("pits-naive.gpkg" if naive else "pits.gpkg"), work / "tiles-stream",
                     decoder=decoder, quicklook=False, progress=False)
    report = run.map_products(job)
    if report.failures:
        raise SystemExit(str(report.failures[0]))
    return len(run.load_manifest(work / "tiles-stream")[next(iter(report.pits))].tiles)


def measure(mode: str, label: Path, work: Path, decoder: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", mode, "--label", str(label), "--work", str(work),
                          "--decoder", str(decoder)], capture_output=True, text=True, env=os.environ)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def prepare(out: Path, sides: list[tuple[int, int]]) -> tuple[list[Path], Path]:
    from al_loop.mapping.from_dataset import DatasetTraining, train_from_dataset

    labels = [build(out, c, r) for c, r in sides]
    decoder = out / "decoder.pt"
    if not decoder.is_file():
        dataset = HIRISE if (HIRISE / "data.yaml").is_file() else _sample(out)
        train_from_dataset(DatasetTraining(dataset, splits=("valid",), epochs=30), decoder, progress=False)
    return labels, decoder


def _sample(out: Path) -> Path:
    from al_loop.data.synthetic import write_yolo_dataset

    return write_yolo_dataset(out / "sample", train=8, valid=8, size=512)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sides", default="8x3,8x12", help="products as columns x rows of 900 px source tiles (one width, two heights)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/map-bench"))
    parser.add_argument("--one")
    parser.add_argument("--label", type=Path)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--decoder", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("AL_LOOP_CACHE_DIR", str(args.out / "cache"))
    if args.one:
        print(json.dumps(one(args.one, args.label, args.work, args.decoder)))
        return
    print(f"CPU: {cpu()}")
    sides = [tuple(int(v) for v in s.split("x")) for s in args.sides.split(",")]
    labels, decoder = prepare(args.out, sides)
    for label in labels:
        report_product(label, args.out / "work" / label.parent.name, decoder)


def report_product(label: Path, work: Path, decoder: Path) -> None:
    import shutil

    from al_loop.data.products import open_product

    product = open_product(label)
    shutil.rmtree(work, ignore_errors=True)
    mb = product.width * product.height * 2 / 1e6
    print(f"\n{product.product_id}: {product.width} x {product.height} px ({mb:.0f} MB as 16-bit), JP2 {label.with_suffix('.JP2').stat().st_size / 1e6:.0f} MB")
    rows = [measure(m, label, work, decoder) for m in ("tile-stream", "tile-naive")]
    measure("map-stream", label, work, decoder)  # fills the embedding cache; not timed
    rows += [measure(m, label, work, decoder) for m in ("map-stream", "map-naive")]
    print(f"{'mode':<12}{'tiles':>6}{'seconds':>9}{'MB/s':>7}{'s/1000 tiles':>14}{'tiles/s':>9}{'peak RSS MB':>13}")
    for r in rows:
        print(f"{r['mode']:<12}{r['tiles']:>6}{r['seconds']:>9.1f}{mb / r['seconds']:>7.1f}"
              f"{1000 * r['seconds'] / r['tiles']:>14.0f}{r['tiles'] / r['seconds']:>9.2f}{r['peak_rss_mb']:>13.0f}")
    stream = next(r for r in rows if r["mode"] == "map-stream")
    tiles_big = (math.ceil((25000 - SIZE) / (SIZE - OVERLAP)) + 1) * (math.ceil((45000 - SIZE) / (SIZE - OVERLAP)) + 1)
    print(f"map of a 25 000 x 45 000 product ({tiles_big} tiles) at this rate: {tiles_big * stream['seconds'] / stream['tiles'] / 60:.0f} min "
          "(embeddings cached; encoding them is extra)")


if __name__ == "__main__":
    main()
