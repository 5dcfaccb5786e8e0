"""Objects of a probability map that a geologist would accept: blobs split at their saddles, and
each object scored as a whole. Pure numbers on arrays; the assembler (mapping/assemble.py) calls it.

Split. A decoder's thresholded map joins neighbouring pits, and pits and their surroundings,
into one component wherever the probability between them stays above the pixel threshold.
Within one component, the probability is smoothed (a Gaussian of ``ObjectRule.smooth_px``,
about half a filter-bank embedding cell on a 900 px tile: the decoder paints its map cell by
cell, and each cell would otherwise be a maximum of its own), its regional maxima that rise at
least ``ObjectRule.dip`` above the saddle to any higher one are the seeds (``h``-maxima), and a
watershed on the smoothed probability, inside the component, gives each seed its part. A part
under ``ObjectRule.min_pixels`` gives its seed up and is flooded by its neighbours: a cut never
leaves a piece the map would drop as speckle. A component with one seed stays whole.

Score. ``object_score = confidence x size_fit``, both in [0, 1]:

- ``confidence = (mean probability - threshold) / (1 - threshold)``: how far the object as a
  whole rises above the pixel threshold (a blob of pixels just above it scores near 0, a
  pit the decoder is sure of near 1);
- ``size_fit`` = 1 for an area within the decoder's training pits' sizes (its card's 5th
  percentile to largest, ``models.pits.size_record``), else the ratio by which it falls outside
  (``area / p5`` below, ``largest / area`` above): a blob four times the largest pit the
  expert ever boxed fits 0.25. Without training sizes, ``size_fit`` is 1.

An object scoring under ``ObjectRule.min_score`` (0.3) is flagged (:data:`FLAG_LOW_SCORE`); the
caller drops flagged objects or keeps them marked. 0.3 was chosen on half of the held-out HiRISE
mosaics of bench/object_split.py (out of 0.1-0.4) and checked on the other half: dropping flagged
objects raised object F1 against the expert's boxes there, cutting at saddles lowered it
(docs/guide/methods.md, "Objects").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from al_loop.models.pits import MIN_OBJECT_SCORE

FOUR = ndimage.generate_binary_structure(2, 1)
FLAG_LOW_SCORE = "low_score"


@dataclass(frozen=True)
class ObjectRule:
    """How objects are split and scored (see the module's docstring); lengths in map pixels."""

    smooth_px: float = 7.0  # Gaussian sigma before seeding: half a filter-bank cell of a 900 px tile (14 px)
    dip: float = 0.1  # a maximum seeds its own object when its probability rises this far above the saddle
    min_pixels: int = 9  # no part smaller than this is cut off (models.pits.MIN_COMPONENT_PX)
    min_score: float = MIN_OBJECT_SCORE  # objects scoring under this are flagged (models.pits)


DEFAULT_RULE = ObjectRule()


def split_objects(probability: np.ndarray, mask: np.ndarray, rule: ObjectRule = DEFAULT_RULE) -> tuple[np.ndarray, int]:
    """Objects of a thresholded probability map, merged blobs cut at their saddles.

    ``probability``: (H, W) float in [0, 1]; ``mask``: (H, W) bool, the pixels that count as pit.
    Returns (labels, count): (H, W) int32, 0 off the mask and 1..count on it, every mask pixel
    labelled and each object 4-connected."""
    mask = np.asarray(mask, bool)
    components, count = ndimage.label(mask, structure=FOUR)
    labels = np.zeros(mask.shape, np.int32)
    total = 0
    for k, box in enumerate(ndimage.find_objects(components), start=1):
        own = components[box] == k
        parts, n = split_component(np.asarray(probability, np.float32)[box], own, rule)
        labels[box][own] = parts[own] + total
        total += n
    return labels, total


def split_component(probability: np.ndarray, mask: np.ndarray, rule: ObjectRule = DEFAULT_RULE) -> tuple[np.ndarray, int]:
    """One 4-connected component (``mask``, (H, W) bool; ``probability`` (H, W) float) cut into
    its parts: (labels (H, W) int32, 0 off the mask, 1..count on it; count)."""
    from skimage.morphology import local_maxima, reconstruction
    from skimage.segmentation import watershed

    mask = np.asarray(mask, bool)
    if mask.sum() < 2 * rule.min_pixels:  # too small to hold two parts
        return mask.astype(np.int32), 1
    pad = int(np.ceil(3 * rule.smooth_px))  # room for the blur to fall off outside the component
    inside = np.pad(np.where(mask, probability, 0).astype(np.float64), pad)
    smooth = ndimage.gaussian_filter(inside, rule.smooth_px)[pad:-pad, pad:-pad] if pad else inside
    inside = np.where(mask, smooth, 0.0)
    # h-maxima: the regional maxima of the reconstruction of (p - dip) under p. Maxima joined by a
    # saddle less than ``dip`` below the lower one share one plateau there, so one seed
    # (skimage's h_maxima marks each such top apart).
    domes = reconstruction(inside - rule.dip, inside, method="dilation", footprint=FOUR)
    seeds = local_maxima(domes, connectivity=1, allow_borders=True) & mask
    markers, n = ndimage.label(seeds, structure=FOUR)
    while n > 1:
        parts = watershed(-smooth, markers, mask=mask, connectivity=1)
        sizes = np.bincount(parts.ravel(), minlength=n + 1)[1:]
        small = np.flatnonzero(sizes < rule.min_pixels)
        if not len(small):
            return parts.astype(np.int32), n
        # the smallest part gives its seed up; the others are flooded again
        markers[markers == small[np.argmin(sizes[small])] + 1] = 0
        markers, n = ndimage.label(markers > 0, structure=FOUR)
    return mask.astype(np.int32), 1


def size_fit(areas: np.ndarray, sizes: dict | None) -> np.ndarray:
    """(N,) in (0, 1]: 1 within the training pits' areas (``sizes``: a decoder card's
    ``pit_sizes``, ``p5_pixels`` to ``max_pixels``), else the ratio by which an area falls outside.
    ``areas``: (N,) in the training tiles' pixels (scale them first when the map's pixel differs)."""
    areas = np.asarray(areas, float)
    if not sizes:
        return np.ones(len(areas))
    low, high = float(sizes["p5_pixels"]), float(sizes["max_pixels"])
    safe = np.maximum(areas, 1e-9)
    return np.clip(np.minimum(safe / max(low, 1e-9), high / safe), 0.0, 1.0)


def object_scores(mean_probability: np.ndarray, areas: np.ndarray, sizes: dict | None,
                  threshold: float) -> np.ndarray:
    """(N,) ``object_score`` in [0, 1] of N objects from their mean probability (N,) and area (N,)
    in training pixels: ``confidence x size_fit`` (the module's docstring)."""
    mean = np.asarray(mean_probability, float)
    confidence = np.clip((mean - threshold) / max(1.0 - threshold, 1e-9), 0.0, 1.0)
    return confidence * size_fit(areas, sizes)


def flags(scores: np.ndarray, rule: ObjectRule = DEFAULT_RULE) -> list[str]:
    """A flag per object (N scores): :data:`FLAG_LOW_SCORE` under ``rule.min_score``, else ""."""
    return [FLAG_LOW_SCORE if s < rule.min_score else "" for s in np.asarray(scores, float)]
