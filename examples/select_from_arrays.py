"""Select the next tiles to label from plain arrays, with no workspace or Label Studio.

You have a model's per-pixel pit probabilities for the tiles nobody has labelled yet, and one
embedding per tile (here: random stand-ins; in practice a decoder's predictions and the tiles'
pooled encoder features). ``al_loop.select`` returns the indices of the tiles to label next,
best first, by any of the loop's strategies, or by a function of your own.

    python examples/select_from_arrays.py
"""
from __future__ import annotations

import numpy as np

import al_loop

rng = np.random.default_rng(0)
n_tiles, side, dim = 200, 64, 128

# Pit probabilities (N, H, W): mostly confident background, a few blobs per tile.
probabilities = np.clip(rng.beta(0.3, 6.0, (n_tiles, side, side)), 0, 1)
for tile in rng.choice(n_tiles, 40, replace=False):
    y, x = rng.integers(8, side - 8, 2)
    probabilities[tile, y - 4 : y + 4, x - 4 : x + 4] = rng.uniform(0.4, 0.95)

# One pooled embedding per tile (N, D), from four kinds of scene, and the tiles labelled so far.
scenes = rng.normal(0, 5, (4, dim))
embeddings = scenes[rng.integers(0, 4, n_tiles)] + rng.normal(0, 1, (n_tiles, dim))
labelled = scenes[[0, 0, 1]] + rng.normal(0, 1, (3, dim))

for strategy in ("entropy", "object_entropy", "coreset", "typiclust", "hybrid", "random"):
    picked = al_loop.select(probabilities, 5, strategy=strategy, embeddings=embeddings, rng=0,
                            labelled_embeddings=labelled)
    print(f"{strategy:>15}: tiles {picked.tolist()}")


def most_pit_pixels(pool, k, rng):
    """A strategy of your own: a function (scores and features of the pool, k, rng) -> indices."""
    return np.argsort(-pool.scores["object_entropy"] - pool.scores["entropy"])[:k]


print(f"{'your own':>15}: tiles {al_loop.select(probabilities, 5, strategy=most_pit_pixels, embeddings=embeddings).tolist()}")

# Per-class probabilities (N, K+1, H, W), background first, work the same way.
classes = np.stack([1 - probabilities, probabilities * 0.7, probabilities * 0.3], axis=1)
print(f"{'margin, typed':>15}: tiles {al_loop.select(classes, 5, strategy='margin').tolist()}")
