"""Each mapped pit's type, for a decoder that learned several.

The map blends one channel (the probability of a pit of any type) across tile overlaps, which
keeps the band in memory small. Types are settled per pit afterwards: every tile under a pit
is decoded again from its cached embedding (the decoder is cheap next to the encoder), and the
pit takes the type whose probability, summed over the pit's pixels in every tile that saw it,
is largest: the rule of :func:`al_loop.models.pits.most_likely_type`, over tiles instead of one.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from al_loop.data.tiling import ProductEntry, TileRecord
from al_loop.science.measure import PitPixels


def pit_types(entry: ProductEntry, pits: list[PitPixels], class_probabilities: Callable[[TileRecord], np.ndarray],
              names: list[str]) -> list[tuple[str, float]]:
    """(type name, share of the pit's probability that type carries) per pit.
    ``class_probabilities(tile)`` gives the decoder's (K+1, H, W) over a tile, background first."""
    sums = np.zeros((len(pits), len(names)))
    boxes = np.array([p.bbox for p in pits], dtype=np.int64).reshape(-1, 4)
    for tile in entry.tiles:
        under = np.flatnonzero((boxes[:, 0] < tile.col + tile.width) & (boxes[:, 2] > tile.col)
                               & (boxes[:, 1] < tile.row + tile.height) & (boxes[:, 3] > tile.row))
        if not len(under):
            continue
        probabilities = class_probabilities(tile)[1:]  # (K, H, W)
        for i in under:
            inside = _pixels_of(pits[i].polygon, tile)
            sums[i] += probabilities[:, inside].sum(axis=1)
    totals = np.maximum(sums.sum(axis=1), 1e-12)
    best = sums.argmax(axis=1)
    return [(names[k], float(sums[i, k] / totals[i])) for i, k in enumerate(best)]


def _pixels_of(polygon, tile: TileRecord) -> np.ndarray:
    """The tile's pixels whose centres lie in the polygon (product coordinates), as a bool mask."""
    from affine import Affine
    from rasterio.features import rasterize

    return rasterize([(polygon, 1)], out_shape=(tile.height, tile.width), transform=Affine(*tile.transform),
                     dtype="uint8").astype(bool)
