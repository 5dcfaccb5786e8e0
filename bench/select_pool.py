"""Selection on a 5 000-tile pool: every strategy's step after scoring, the diversity step included.

A synthetic pool of pooled embeddings at the real dimension (``pooled_features``: mean and std
of each channel, 2 x 256 = 512 for SAM's and SAM 2.1's embeddings, 2 x 64 = 128 for the filter
bank) drawn from a few dozen scene clusters, tile entropies drawn at random, and 50 labelled
tiles. Times each strategy picking a batch and reports the peak memory it allocated (tracemalloc,
numpy's buffers included) beside the pool's own; the object-aware measure is timed on decoder-
sized probability maps (filter bank: 336 x 336) and extrapolated to the pool. Target (issue 38):
<= 60 s for the whole selection on 2 cores.

    python bench/select_pool.py [--tiles 5000] [--dim 512] [--batch 5] [--labelled 50]
"""
from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from al_loop.models.engines import cpu_summary as cpu  # the CPU's model and the flags that decide speed
from al_loop.query.strategies import PoolScores, get_strategy
from al_loop.query.uncertainty import binary, entropy, object_entropy

STRATEGIES = ("entropy", "random", "coreset", "typiclust", "hybrid", "density", "diverse")


def pool_of(tiles: int, dim: int, labelled: int, seed: int) -> PoolScores:
    rng = np.random.default_rng(seed)
    scenes = rng.normal(0, 3, (40, dim))
    every = scenes[rng.integers(0, 40, tiles + labelled)] + rng.normal(0, 1, (tiles + labelled, dim))
    return PoolScores(scores={"entropy": rng.uniform(0, 0.7, tiles)}, features=every[:tiles].astype(np.float32),
                      labelled_features=every[tiles:].astype(np.float32))


def timed(strategy: str, pool: PoolScores, batch: int) -> tuple[float, float]:
    tracemalloc.start()
    started = time.perf_counter()
    picked = get_strategy(strategy).select(pool, batch, np.random.default_rng(0))
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    assert len(set(np.asarray(picked).tolist())) == batch
    return seconds, peak


def measure_seconds(tiles: int, side: int = 336, sample: int = 100) -> tuple[float, float]:
    """Seconds per pool for the tile-mean and the object-aware entropy, from ``sample`` maps."""
    rng = np.random.default_rng(1)
    maps = [binary(np.clip(rng.beta(0.3, 6.0, (side, side)), 0, 1)) for _ in range(sample)]
    for m in maps[::3]:
        m[1, 100:120, 100:120], m[0, 100:120, 100:120] = 0.6, 0.4
    out = []
    # pool scoring counts a pit from two embedding cells up: 2 x 8 x 8 pixels of the probability map
    for fn in (entropy, lambda m: object_entropy(m, min_pixels=128)):
        started = time.perf_counter()
        for m in maps:
            fn(m)
        out.append((time.perf_counter() - started) / sample * tiles)
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=512, help="pooled dimension (512 SAM, 128 filter bank)")
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--labelled", type=int, default=50)
    args = parser.parse_args()
    print(f"CPU: {cpu()}; torch threads n/a (numpy/scikit-learn only)")
    pool = pool_of(args.tiles, args.dim, args.labelled, 0)
    print(f"pool: {args.tiles} tiles x {args.dim} float32 = {pool.features.nbytes / 2**20:.1f} MiB of pooled embeddings, "
          f"{args.labelled} labelled, batch {args.batch}")
    print(f"{'strategy':<12}{'seconds':>9}{'peak MiB':>10}")
    for strategy in STRATEGIES:
        seconds, peak = timed(strategy, pool, args.batch)
        print(f"{strategy:<12}{seconds:>9.2f}{peak:>10.1f}")
    mean_s, object_s = measure_seconds(args.tiles)
    print(f"scoring {args.tiles} maps of 336 x 336 (extrapolated from 100): tile-mean entropy {mean_s:.1f} s, "
          f"object-aware {object_s:.1f} s")


if __name__ == "__main__":
    main()
