"""Per-tile uncertainty from per-pixel foreground probabilities: pure numeric functions.

Each measure turns the decoder's pixel probabilities of one tile into one score,
higher meaning "the expert's label would teach the decoder more". They are modAL's
measures (entropy, margin, least confident) on the two classes pit / not pit,
written in closed form for two classes so a 512x512 map costs milliseconds
(``tests/test_uncertainty.py`` checks they equal modAL's on the same pixels), then
averaged over the tile's pixels.
"""
from __future__ import annotations

import numpy as np

EPS = 1e-6


def _p(p: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(p, dtype=np.float32), EPS, 1 - EPS)


def pixel_entropy(p: np.ndarray) -> np.ndarray:
    """Binary entropy (nats) of each pixel."""
    p = _p(p)
    return -(p * np.log(p) + (1 - p) * np.log1p(-p))


def entropy(p: np.ndarray) -> float:
    """Mean pixel entropy."""
    return float(pixel_entropy(p).mean())


def least_confident(p: np.ndarray) -> float:
    """Mean of 1 - max class probability."""
    p = _p(p)
    return float(np.minimum(p, 1 - p).mean())


def margin(p: np.ndarray) -> float:
    """Mean of 1 - (top class probability - second), so higher is more uncertain."""
    return float((1 - np.abs(2 * _p(p) - 1)).mean())


def bald(samples: np.ndarray) -> float:
    """Mean pixel mutual information between prediction and weights, from MC-dropout samples (T, ...).

    H(mean_t p_t) - mean_t H(p_t): high where the dropout samples disagree, i.e. where
    the model, not the image, is unsure.
    """
    samples = np.asarray(samples, dtype=np.float32)
    return float((pixel_entropy(samples.mean(axis=0)) - pixel_entropy(samples).mean(axis=0)).mean())


# name -> function(probabilities of one tile) -> score
PIXEL_MEASURES = {"entropy": entropy, "least_confident": least_confident, "margin": margin}
