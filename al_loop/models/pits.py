"""What counts as a pit in the decoder's probabilities: one rule for evaluation, pre-annotation
and the map. Plain numbers, no torch: the command line reads them without loading a model."""
from __future__ import annotations

import numpy as np

THRESHOLD = 0.5  # a pixel is pit where the decoder's probability reaches this
# An object of a map scoring under this (mean probability x fit to the training pits' sizes:
# mapping/objects.py) is flagged low_score; chosen on held-out tiles (docs/guide/methods.md).
MIN_OBJECT_SCORE = 0.3
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


def pit_objects(probs: np.ndarray, min_pixels: int = MIN_COMPONENT_PX, threshold: float = THRESHOLD) -> np.ndarray:
    """(H, W) bool: the pixels of the pits the decoder predicts in (K+1, H, W) probabilities,
    components (4-connected) of at least ``min_pixels`` where the pit probability reaches
    ``threshold``; smaller specks are left out, as pre-annotation and the metrics leave them."""
    from scipy import ndimage

    labels, count = ndimage.label(pit_probability(probs) >= threshold)
    if not count:
        return labels > 0
    big = np.flatnonzero(np.bincount(labels.ravel())[1:] >= min_pixels) + 1
    return np.isin(labels, big)


def most_likely_type(probs: np.ndarray, where: np.ndarray) -> int:
    """The type (1..K) of one pit: the most likely over its pixels ``where`` (a bool mask, or
    index arrays), summing each type's probability over them."""
    index = (slice(1, None), *where) if isinstance(where, tuple) else (slice(1, None), where)
    return int(np.asarray(probs)[index].sum(axis=1).argmax()) + 1


def object_areas(masks) -> np.ndarray:
    """Pixel areas of every labelled object (4-connected component of ``mask > 0``) over the masks."""
    from scipy import ndimage

    areas = []
    for mask in masks:
        labels, count = ndimage.label(np.asarray(mask) > 0)
        if count:
            areas.append(np.bincount(labels.ravel())[1:])
    return np.concatenate(areas).astype(np.int64) if areas else np.zeros(0, np.int64)


def size_record(masks, metres_per_pixel: float | None = None) -> dict | None:
    """What a decoder keeps of its training pits' sizes, so ``map`` can default its size limits:
    the count and the 5th percentile, median and largest area in pixels, and the tiles' pixel
    size when known (a YOLO set's JPEGs carry none)."""
    areas = object_areas(masks)
    if not len(areas):
        return None
    return {"count": len(areas), "p5_pixels": float(np.percentile(areas, 5)),
            "median_pixels": float(np.median(areas)), "max_pixels": float(areas.max()),
            "metres_per_pixel": metres_per_pixel}


def tile_side(sizes) -> int | None:
    """The side a decoder's training tiles had (median of their longer sides), from (H, W) sizes."""
    sides = [max(size) for size in sizes]
    return int(np.median(sides)) if sides else None


# A mapped pit keeps within these multiples of the training pits' sizes unless told otherwise:
# half the 5th percentile (smaller is speckle the expert never boxed), twice the largest (larger
# is terrain: the 150 000 m2 "pit" spanned a third of its product).
MIN_AREA_FACTOR, MAX_AREA_FACTOR = 0.5, 2.0


def default_area_limits(sizes: dict | None, pixel_area_m2: float) -> tuple[float | None, float | None]:
    """(min, max) pit area in m2 from a decoder's size record; training pixels count at their own
    size when recorded, else at the mapped product's (``pixel_area_m2``)."""
    if not sizes:
        return None, None
    scale = sizes.get("metres_per_pixel")
    area = scale * scale if scale else pixel_area_m2
    return MIN_AREA_FACTOR * sizes["p5_pixels"] * area, MAX_AREA_FACTOR * sizes["max_pixels"] * area
