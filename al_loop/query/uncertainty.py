"""Per-tile uncertainty from per-pixel class probabilities: pure numeric functions.

Each measure turns the decoder's class probabilities over one tile, an array (K+1, ...)
with background first and then the K pit types, into one score, higher meaning "the
expert's label would teach the decoder more". They are modAL's measures (entropy,
margin, least confident) computed per pixel on the K+1 classes, then averaged over the
tile's pixels (baal's split: a pixel heuristic, then a reduction). With one type the
distribution is (1 - p, p), the binary case; ``binary`` makes it from a pit map.
``tests/test_uncertainty.py`` checks they equal modAL's on the same pixels.

Pits cover a few per cent of a tile, so a tile mean is dominated by background:
:func:`object_entropy` aggregates over the predicted pits and their borders instead.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from al_loop.models.pits import MIN_COMPONENT_PX, pit_objects

EPS = 1e-6
OBJECT_BORDER = 2  # pixels of the probability map around each predicted pit that count as its border
OBJECT_TIE_BREAK = 1e-3  # weight of the tile mean, which orders tiles without any predicted pit


def binary(p: np.ndarray) -> np.ndarray:
    """The two-class distribution (not pit, pit) of a map of pit probabilities."""
    p = np.asarray(p, dtype=np.float32)
    return np.stack([1 - p, p])


def _p(probs: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(probs, dtype=np.float32), EPS, 1.0)


def pixel_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each pixel's class distribution; classes on axis 0."""
    p = _p(probs)
    return -(p * np.log(p)).sum(axis=0)


def _top_two(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ordered = np.sort(np.asarray(probs, dtype=np.float32), axis=0)
    return ordered[-1], ordered[-2]


def entropy(probs: np.ndarray) -> float:
    """Mean pixel entropy."""
    return float(pixel_entropy(probs).mean())


def least_confident(probs: np.ndarray) -> float:
    """Mean of 1 - max class probability."""
    return float((1 - _top_two(probs)[0]).mean())


def margin(probs: np.ndarray) -> float:
    """Mean of 1 - (top class probability - second), so higher is more uncertain."""
    top, second = _top_two(probs)
    return float((1 - (top - second)).mean())


def bald(samples: np.ndarray) -> float:
    """Mean pixel mutual information between prediction and weights, from MC-dropout samples
    (T, K+1, ...): H(mean_t p_t) - mean_t H(p_t), high where the dropout samples disagree,
    i.e. where the model, not the image, is unsure."""
    samples = np.asarray(samples, dtype=np.float32)
    return bald_from(samples.mean(axis=0), np.mean([pixel_entropy(s) for s in samples], axis=0))


def bald_from(mean_probs: np.ndarray, mean_entropy: np.ndarray) -> float:
    """BALD from running sums (mean distribution, mean pixel entropy over the samples), so
    scoring never holds all samples of a batch at once."""
    return float((pixel_entropy(mean_probs) - mean_entropy).mean())


def rare_type_entropy(probs: np.ndarray, class_weights: Sequence[float]) -> float:
    """Entropy weighted towards rare types: each pixel's entropy times the expected weight
    of the type it would be if it is a pit (the inverse-frequency weights the decoder
    trained with, normalised to mean 1), averaged. Tiles where the model is unsure about
    something it has seen little of come first. With one type it is the entropy."""
    weights = np.asarray(class_weights[1:], dtype=np.float32)
    weights = weights / weights.mean()
    p = _p(probs)
    types = p[1:]
    rarity = np.tensordot(weights, types, axes=1) / types.sum(axis=0)
    return float((pixel_entropy(p) * rarity).mean())


def object_entropy(probs: np.ndarray, border: int = OBJECT_BORDER, min_pixels: int = MIN_COMPONENT_PX) -> float:
    """Mean pixel entropy over the predicted pits and their borders, normalised to [0, 1] by
    log(K+1); probs (K+1, H, W). A predicted pit is what pre-annotation would draw
    (:func:`~al_loop.models.pits.pit_objects`: P(pit, any type) >= 0.5, ``min_pixels`` or more);
    it is grown by ``border`` pixels so its rim, where a pit's outline is decided, counts too.
    Specks under ``min_pixels`` do not count: a tile ranked first for them would reach the
    expert with nothing drawn on it, and the metrics do not count them as pits either.

    The tile mean is dominated by background (pits cover a few per cent of a tile): a tile whose
    background is mildly unsure everywhere outranks one with a small pit the decoder doubts.
    Here that doubted pit ranks first, and a tile with only confident pits ranks low. Tiles with
    no predicted pit are ordered among themselves by their tile mean, weighted by
    :data:`OBJECT_TIE_BREAK` (so below nearly any tile with a doubted pit)."""
    p = _p(probs)
    normalised = pixel_entropy(p) / np.log(p.shape[0])
    tie = OBJECT_TIE_BREAK * float(normalised.mean())
    region = pit_objects(probs, min_pixels)
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    if not len(rows):
        return tie
    # grown inside the pits' bounding box plus the border only: the same pixels as growing the
    # whole map, at a fraction of the cost on a pool of thousands of maps
    box = (slice(max(rows[0] - border, 0), rows[-1] + border + 1), slice(max(cols[0] - border, 0), cols[-1] + border + 1))
    grown = ndimage.binary_dilation(region[box], iterations=border) if border > 0 else region[box]
    return float(normalised[box][grown].mean()) + tie


# name -> function(class probabilities of one tile) -> score
PIXEL_MEASURES = {"entropy": entropy, "least_confident": least_confident, "margin": margin,
                  "object_entropy": object_entropy}
