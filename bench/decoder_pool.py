"""Decoder training and pool scoring from the embedding cache, and memory against pool size.

Prints, side by side:
  - seconds to train the domain decoder on 50 tiles x 100 epochs and to score a pool of
    500 cached tiles (entropy), for SAM vit_* shaped embeddings (256x64x64) and for the
    filter bank's (42x64x64); target: train + score <= 30 s on 2 cores;
  - peak RSS of scoring pools of 500 and 5000 cached tiles, each in a fresh process;
    target: flat in pool size and <= 2 GB at 5000;
  - the encoder-pass counter over a second embedding pass of the same tiles (must be 0).

Embeddings are seeded random arrays of the real shapes (the decoder's cost does not
depend on their values); masks have HiRISE's foreground fraction (~4 %).

    python bench/decoder_pool.py [--pools 500,5000] [--channels 256,42] [--types 1,5]
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from al_loop.embeddings.cache import EmbeddingCache  # noqa: E402
from al_loop.embeddings.embed import TileRef  # noqa: E402
from al_loop.query.pool import score_pool  # noqa: E402
from al_loop.training.masks import box_labels  # noqa: E402
from al_loop.training.train import TrainingSet, train_decoder  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from map_product import cpu  # noqa: E402

TILE = (900, 900)


def fill_cache(root: Path, encoder_id: str, n: int, channels: int, seed: int = 0) -> list[TileRef]:
    cache = EmbeddingCache(root)
    rng = np.random.default_rng(seed)
    refs = []
    for i in range(n):
        sha = f"{seed:08x}{i:056x}"
        if not cache.contains(sha, encoder_id):
            cache.put(sha, encoder_id, rng.normal(size=(channels, 64, 64)).astype(np.float32))
        refs.append(TileRef(f"tile{i}", sha, TILE))
    return refs


def hirise_like_labels(rng: np.random.Generator, types: int) -> np.ndarray:
    boxes = []
    for _ in range(rng.integers(1, 4)):
        w = rng.uniform(40, 200)
        x, y = rng.uniform(0, 900 - w, 2)
        boxes.append((x, y, x + w, y + w))
    return box_labels(np.array(boxes), rng.integers(1, types + 1, len(boxes)), TILE)


def train_and_score(channels: int, cache_root: Path, pool: int, train: int, epochs: int, types: int = 1) -> dict:
    encoder_id = f"bench-{channels}"
    refs = fill_cache(cache_root, encoder_id, pool + train, channels)
    cache = EmbeddingCache(cache_root)
    rng = np.random.default_rng(1)
    data = TrainingSet(types=types)
    for ref in refs[:train]:
        data.add(np.asarray(cache.load(ref.sha256, encoder_id), np.float32), hirise_like_labels(rng, types))
    t0 = time.perf_counter()
    decoder = train_decoder(data, epochs=epochs, seed=0, progress=False)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = score_pool(decoder, refs[train:], cache, encoder_id, measures=["entropy"], progress=False)
    t_score = time.perf_counter() - t0
    assert len(scores) == pool
    return {"train_s": t_train, "score_s": t_score, "total_s": t_train + t_score}


def rss_child(cache_root: str, encoder_id: str, n: int, channels: int) -> None:
    """Runs in a fresh process: score a pool of n cached tiles; the parent reads peak RSS."""
    from al_loop.models.decoder import DomainDecoder

    refs = fill_cache(Path(cache_root), encoder_id, n, channels)
    t0 = time.perf_counter()
    score_pool(DomainDecoder(channels), refs, EmbeddingCache(cache_root), encoder_id, measures=["entropy"], features=True, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak_rss": peak, "seconds": time.perf_counter() - t0}))


def encode_counter(tmp: Path) -> tuple[int, int]:
    from al_loop.data.synthetic import write_images
    from al_loop.embeddings.embed import embed_files
    from al_loop.models.filterbank import FilterbankEncoder

    tmp = Path(tempfile.mkdtemp(prefix="counter-", dir=tmp))  # always an empty cache to start from
    paths = [p for p, _ in write_images(tmp / "tiles", 20, seed=5, size=256)]
    first = EmbeddingCache(tmp / "fb-cache")
    embed_files(paths, FilterbankEncoder(), first, progress=False)
    second = EmbeddingCache(tmp / "fb-cache")  # as a later process would
    embed_files(paths, FilterbankEncoder(), second, progress=False)
    return first.stats.encodes, second.stats.encodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", default="256,42", help="embedding channels to time (256: SAM, 42: filter bank)")
    parser.add_argument("--pools", default="500,5000", help="pool sizes for peak RSS")
    parser.add_argument("--rss-channels", type=int, default=256)
    parser.add_argument("--train", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--pool", type=int, default=500)
    parser.add_argument("--types", default="1", help="pit types to time the decoder with (1: binary), e.g. 1,5")
    parser.add_argument("--dir", type=Path, help="scratch directory (default: a temporary one, removed after)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        root, encoder_id, n, channels = args.child
        rss_child(root, encoder_id, int(n), int(channels))
        return
    import torch

    scratch = args.dir or Path(tempfile.mkdtemp(prefix="al-bench-"))
    try:
        print(f"{cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads; scratch {scratch}")
        print(f"\ntrain {args.train} tiles x {args.epochs} epochs, then score {args.pool} cached tiles (entropy)")
        print(f"{'embedding':<14}{'types':>6}{'train s':>9}{'score s':>9}{'total s':>9}{'target':>9}")
        for channels in [int(c) for c in args.channels.split(",")]:
            for types in [int(k) for k in args.types.split(",")]:
                r = train_and_score(channels, scratch / "cache", args.pool, args.train, args.epochs, types)
                name = f"{channels}x64x64"
                print(f"{name:<14}{types:>6}{r['train_s']:>9.1f}{r['score_s']:>9.1f}{r['total_s']:>9.1f}{'<= 30':>9}",
                      flush=True)

        print(f"\npeak RSS scoring a pool from the cache ({args.rss_channels}x64x64 float16, fresh process each)")
        print(f"{'pool':>6}{'cache on disk':>15}{'peak RSS':>11}{'seconds':>9}")
        for n in [int(p) for p in args.pools.split(",")]:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(scratch / "rss-cache"), "rss", str(n), str(args.rss_channels)],
                check=True, capture_output=True, text=True,
            ).stdout
            r = json.loads(out.strip().splitlines()[-1])
            disk = n * args.rss_channels * 64 * 64 * 2 / 2**30
            print(f"{n:>6}{disk:>12.2f} GB{r['peak_rss'] / 2**30:>8.2f} GB{r['seconds']:>9.1f}", flush=True)

        first, second = encode_counter(scratch)
        print(f"\nencoder passes: first embedding of 20 tiles {first}, second pass over the same tiles {second}")
    finally:
        if args.dir is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
