"""What counts as a pit in the decoder's probabilities: one rule for evaluation, pre-annotation
and the map. Plain numbers, no torch: the command line reads them without loading a model."""
from __future__ import annotations

import numpy as np

THRESHOLD = 0.5  # a pixel is pit where the decoder's probability reaches this
# Floor for a component to count as a pit, in pixels of the original tile.
MIN_COMPONENT_PX = 9


def min_object_pixels(size: tuple[int, int], grid: int, cells: float = 2.0) -> int:
    """Smallest component that counts as a pit: ``cells`` embedding cells' area.

    The decoder paints one 8x8 patch per embedding cell, so blobs smaller than a couple
    of cells are speckle at its resolution, not pits it resolved (on HiRISE tiles of
    900 px, one cell is ~14 px across).
    """
    cell = max(size) / grid
    return max(MIN_COMPONENT_PX, int(round(cells * cell * cell)))


def pit_probability(probs: np.ndarray) -> np.ndarray:
    """The probability of a pit of any type, from (K+1, ...) class probabilities (background
    first): the sum over the types, not 1 - background (no cancellation where it is tiny)."""
    return np.asarray(probs)[1:].sum(axis=0)


def most_likely_type(probs: np.ndarray, where: np.ndarray) -> int:
    """The type (1..K) of one pit: the most likely over its pixels ``where`` (a bool mask, or
    index arrays), summing each type's probability over them."""
    index = (slice(1, None), *where) if isinstance(where, tuple) else (slice(1, None), where)
    return int(np.asarray(probs)[index].sum(axis=1).argmax()) + 1
