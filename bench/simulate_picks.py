"""What each strategy picked in an `al-loop simulate` run: are its tiles typical of the pool?

Reads the JSON that `al-loop simulate --json` wrote and prints, per strategy, for the tiles
it chose after round 1 (round 1 is the same random tiles for every strategy):
  - distance of the tile's pooled embedding to the pool's centre (features standardised over
    the train split, so 1 is one standard deviation per feature on average: outliers score high);
  - distance to the nearest valid tile in the same space;
  - mean grey level of the tile (0..255) and expert boxes per tile;
  - repeats: of the tiles a run had labelled by its last round, how many carry exactly the
    boxes of another of them, i.e. are copies of one scene (augmented versions keep the
    boxes), averaged over seeds.
A last line gives the same figures for the whole train split and for the valid split.

    python bench/simulate_picks.py RUNS.json [--dataset DIR] [--cache-dir DIR]

The embeddings must already be in the cache (simulate put them there); nothing is encoded.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from al_loop.data.images import as_grey_float, content_hash, decode_image
from al_loop.data.yolo import load_split
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.embeddings.embed import pooled_features
from al_loop.models.encoders import encoder_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--dataset", type=Path, help="default: the dataset the run names")
    parser.add_argument("--cache-dir", type=Path)
    args = parser.parse_args()
    payload = json.loads(args.runs.read_text())
    config = payload["config"]
    dataset = args.dataset or Path(config["dataset"])
    cache = EmbeddingCache(args.cache_dir)
    enc = encoder_id(config["encoder"], config.get("checkpoint"))

    def describe(tiles):
        out = {}
        for t in tiles:
            data = t.image.read_bytes()
            tile = decode_image(data, str(t.image))
            h, w = tile.pixels.shape[:2]
            feats = pooled_features(cache.load(content_hash(data), enc), (h, w))
            out[t.image.name] = (feats, float(as_grey_float(tile.pixels).mean() * 255), len(t.boxes), _box_signature(t.boxes))
        return out

    train_tiles, _ = load_split(dataset, config.get("train_split", "train"))
    valid_tiles, _ = load_split(dataset, config.get("eval_split", "valid"))
    train, valid = describe(train_tiles), describe(valid_tiles)
    feats = np.stack([v[0] for v in train.values()])
    mean, std = feats.mean(axis=0), feats.std(axis=0) + 1e-6
    valid_z = (np.stack([v[0] for v in valid.values()]) - mean) / std

    def row(label: str, names: list[str], table: dict, repeats: float | None = None) -> str:
        z = (np.stack([table[n][0] for n in names]) - mean) / std
        centre = np.linalg.norm(z, axis=1).mean() / np.sqrt(z.shape[1])
        # a valid tile's nearest valid tile is itself: take the next one
        rank = 1 if table is valid else 0
        nearest = np.mean([np.partition(np.linalg.norm(valid_z - v, axis=1), rank)[rank] for v in z]) / np.sqrt(z.shape[1])
        grey = np.mean([table[n][1] for n in names])
        boxes = np.mean([table[n][2] for n in names])
        shown = "-" if repeats is None else f"{repeats:.1f}"
        return f"{label:<22}{len(names):>7}{centre:>12.3f}{nearest:>14.3f}{grey:>8.1f}{boxes:>8.2f}{shown:>9}"

    print(f"{'tiles':<22}{'count':>7}{'to centre':>12}{'to valid':>14}{'grey':>8}{'boxes':>8}{'repeats':>9}")
    rounds = payload["rounds"]
    for strategy in dict.fromkeys(r["strategy"] for r in rounds):
        first = {r["seed"]: len(r["labelled_tiles"]) for r in rounds if r["strategy"] == strategy and r["round"] == 1}
        last = max(x["round"] for x in rounds if x["strategy"] == strategy)
        picked, repeats = [], []
        for r in rounds:
            if r["strategy"] == strategy and r["round"] == last:
                picked += r["labelled_tiles"][first[r["seed"]] :]
                repeats.append(count_repeats([train[n][3] for n in r["labelled_tiles"]]))
        print(row(f"picked by {strategy}", picked, train, float(np.mean(repeats))))
    print(row("train split (all)", list(train), train))
    print(row("valid split (all)", list(valid), valid))


def _box_signature(boxes) -> tuple | None:
    """The tile's expert boxes as a hashable set; None for a tile without boxes, which
    says nothing about which scene it shows."""
    if not len(boxes):
        return None
    return tuple(sorted(tuple(round(float(v), 4) for v in box) for box in boxes))


def count_repeats(signatures: list) -> int:
    """How many tiles carry the same boxes as an earlier tile of the list."""
    seen, repeats = set(), 0
    for sig in signatures:
        if sig is None:
            continue
        repeats += sig in seen
        seen.add(sig)
    return repeats


if __name__ == "__main__":
    main()
