"""Which normalisation carries a decoder's radiometry from its training tiles to a map.

For each of a few sets of nine real HiRISE tiles (distinct groups of ../shared/data/hirise-pits
valid): train a decoder (filter bank, box oracle) on the nine tiles, normalised one way; then
mosaic the nine into a 10-bit product, cut it with ``al-loop tile``'s stretch, and predict
every product tile normalised the same way. Compare, on the same ground, the pit area and the
expert boxes found (a pit's bounding box at IoU >= 0.5) by the decoder on its own tiles and on
the mapped product. ``scene-matched`` is the per-scene alternative: the product's tiles linearly
remapped so their pooled mean and sd equal the training tiles'; ``scene-percentile`` stretches
each training crop by its own percentiles, as ``tile`` stretches a whole product by its own.

    python bench/radiometry.py [--sets 3] [--epochs 60] [--out docs/radiometry.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from map_product import HIRISE, cpu

VARIANTS = ("none", "scene-matched", "scene-percentile", "tile-percentile", "tile-zscore")


def nine_tile_sets(count: int, seed: int) -> list[list]:
    from al_loop.data.groups import group_tiles
    from al_loop.data.yolo import load_split

    tiles = [t for t in load_split(HIRISE, "valid")[0] if len(t.boxes)]
    groups = np.asarray(group_tiles([t.image for t in tiles], progress=False))
    firsts = [int(np.flatnonzero(groups == g)[0]) for g in np.unique(groups)]
    rng = np.random.default_rng(seed)
    return [[tiles[i] for i in rng.choice(firsts, 9, replace=False)] for _ in range(count)]


def grey(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("L"))


def normalised(variant: str, pixels: np.ndarray, scene=None) -> np.ndarray:
    """The tile as the encoder sees it under ``variant`` (``scene``: the product's remap, or
    "product" for a tile cut from the product)."""
    from al_loop.data.radiometry import Linear

    if isinstance(scene, Linear):
        return scene.apply(pixels)
    if variant in ("none", "scene-matched") or (variant == "scene-percentile" and scene == "product"):
        return pixels
    return per_tile("tile-zscore" if variant == "tile-zscore" else "tile-percentile", pixels)


def per_tile(name: str, pixels: np.ndarray) -> np.ndarray:
    """Each tile stretched on its own: its 0.5-99.5 percentiles to 0-255, or its mean and sd to 128 and 40."""
    values = pixels[pixels > 0].astype(np.float32)
    if name == "tile-percentile":
        lo, hi = np.percentile(values, (0.5, 99.5))
        scale = 255.0 / max(hi - lo, 1.0)
        offset = -lo * scale
    else:
        scale = 40.0 / max(float(values.std()), 0.5)
        offset = 128.0 - float(values.mean()) * scale
    out = np.clip(np.round(pixels * scale + offset), 0, 255).astype(np.uint8)
    return np.where(pixels == 0, 0, out).astype(np.uint8)


def encode(encoder, pixels: np.ndarray) -> np.ndarray:
    from al_loop.data.images import DecodedTile

    return encoder.encode(DecodedTile("<bench>", pixels, ""))


def components(mask: np.ndarray, min_pixels: int) -> list[tuple[int, int, int, int]]:
    from scipy import ndimage

    labels, _ = ndimage.label(mask)
    boxes = []
    for k, sl in enumerate(ndimage.find_objects(labels)):
        if sl is not None and (labels[sl] == k + 1).sum() >= min_pixels:
            boxes.append((sl[1].start, sl[0].start, sl[1].stop, sl[0].stop))
    return boxes


def box_iou(a, b) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def scores(mask: np.ndarray, expert: list, min_pixels: int) -> dict:
    """Pit area; boxes found (a pit's bounding box at IoU >= 0.5) and boxes covered (at least a
    quarter of the box is pit)."""
    found = components(mask, min_pixels)
    matched = sum(any(box_iou(e, f) >= 0.5 for f in found) for e in expert)
    covered = sum(mask[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))].mean() >= 0.25 for x0, y0, x1, y1 in expert)
    return {"pit_fraction": float(mask.mean()), "boxes_found": int(matched), "boxes_covered": int(covered),
            "boxes": len(expert), "pits": len(found)}


def one_set(tiles: list, variant: str, epochs: int, seed: int, tile_size: int = 1024) -> dict:
    from al_loop.data import sample_products as sp
    from al_loop.data.radiometry import matching, tile_statistics
    from al_loop.data.tiling import tile_products
    from al_loop.models.decoder import predict_tile
    from al_loop.models.filterbank import FilterbankEncoder
    from al_loop.models.pits import THRESHOLD, min_object_pixels
    from al_loop.training.oracle import build_oracle
    from al_loop.training.train import TrainingSet, train_decoder

    encoder, oracle = FilterbankEncoder(), build_oracle("box")
    raw = [grey(t.image) for t in tiles]
    data = TrainingSet()
    for tile, pixels in zip(tiles, raw, strict=False):
        data.add(encode(encoder, normalised(variant, pixels)), oracle.labels(tile) > 0)
    decoder = train_decoder(data, epochs=epochs, seed=seed, progress=False)

    side = raw[0].shape[0]
    expert = [(b[0] + (i % 3) * side, b[1] + (i // 3) * side, b[2] + (i % 3) * side, b[3] + (i // 3) * side)
              for i, t in enumerate(tiles) for b in t.boxes]
    on_tiles = np.zeros((3 * side, 3 * side), bool)
    for i, pixels in enumerate(raw):
        p = predict_tile(decoder, encode(encoder, normalised(variant, pixels)), pixels.shape)
        r, c = divmod(i, 3)
        on_tiles[r * side:(r + 1) * side, c * side:(c + 1) * side] = p >= THRESHOLD

    with tempfile.TemporaryDirectory() as work:
        product = sp.mosaic(raw, 3, null_corner=False)
        wkt = sp.equirectangular_wkt(-10.0, 130.0)
        path = sp.write_geotiff(product, Path(work) / "P.tif", wkt, sp.corner_for(-10.0, *product.shape[::-1], 0.25), 0.25)
        entry = tile_products([path], Path(work) / "tiles", tile_size, tile_size // 4, progress=False).entries["P"]
        pngs = [grey(Path(work) / "tiles" / t.file) for t in entry.tiles]
        scene = None
        if variant == "scene-matched":  # al-loop's way: the product's pooled statistics to the training tiles'
            scene = matching(tile_statistics(pngs), tile_statistics(raw))
        elif variant == "scene-percentile":
            scene = "product"
        total, weight = np.zeros(product.shape, np.float32), np.zeros(product.shape, np.float32)
        for t, pixels in zip(entry.tiles, pngs, strict=False):
            p = predict_tile(decoder, encode(encoder, normalised(variant, pixels, scene)), pixels.shape)
            total[t.row:t.row + t.height, t.col:t.col + t.width] += p
            weight[t.row:t.row + t.height, t.col:t.col + t.width] += 1
        mapped = total / np.maximum(weight, 1) >= THRESHOLD
    min_pixels = min_object_pixels((side, side), encoder.grid)
    return {"tiles": scores(on_tiles, expert, min_pixels), "map": scores(mapped, expert, min_pixels),
            "stretch": [float(entry.stretch[0]), float(entry.stretch[1])]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--tile-size", type=int, default=1024, help="side of the product's tiles (the crops are 900)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    if not (HIRISE / "valid" / "images").is_dir():
        sys.exit(f"needs the real HiRISE tiles at {HIRISE}")
    print(cpu())
    results = {"cpu": cpu(), "epochs": args.epochs, "tile_size": args.tile_size, "sets": []}
    for k, tiles in enumerate(nine_tile_sets(args.sets, args.seed)):
        row = {"tiles": [t.image.name for t in tiles], "variants": {}}
        for variant in args.variants.split(","):
            started = time.perf_counter()
            row["variants"][variant] = got = one_set(tiles, variant, args.epochs, args.seed, args.tile_size)
            t, m = got["tiles"], got["map"]
            print(f"set {k} {variant:16s} pit area tiles {t['pit_fraction']:.3f} map {m['pit_fraction']:.3f} "
                  f"(x{m['pit_fraction'] / max(t['pit_fraction'], 1e-9):.2f})  boxes found tiles "
                  f"{t['boxes_found']}/{t['boxes']} map {m['boxes_found']}/{m['boxes']}  covered tiles "
                  f"{t['boxes_covered']} map {m['boxes_covered']}  "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
        results["sets"].append(row)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
