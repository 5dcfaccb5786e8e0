"""``al_loop.select``: the next tiles to label, from plain arrays (no workspace, cache or decoder).

Like modAL's query strategies, it works on what a model predicted: per-pixel probabilities
for each tile, and optionally one embedding per tile for the strategies that look at
diversity. It scores the tiles with the same measures and picks them with the same strategy
functions as ``next-batch`` and ``simulate`` (which score a cached pool through the decoder:
:func:`al_loop.query.pool.select_from_pool`).
"""
from __future__ import annotations

import numpy as np

from al_loop.errors import UsageError
from al_loop.query.strategies import PoolScores, Strategy, get_strategy
from al_loop.query.uncertainty import PIXEL_MEASURES, binary


def class_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """(N, K+1, H, W) class distributions from (N, H, W) pit probabilities or (N, K+1, H, W)
    class probabilities (background first, summing to 1 over axis 1)."""
    p = np.asarray(probabilities, dtype=np.float32)
    if p.ndim == 3:
        return np.stack([binary(tile) for tile in p])
    if p.ndim == 4:
        return p
    raise UsageError(f"probabilities must be (N, H, W) for pit or (N, K, H, W) per class, got shape {p.shape}")


def pooled(embeddings: np.ndarray | None) -> np.ndarray | None:
    """(N, D) tile descriptors: as given when 2-D, or the mean and std of each channel over the
    cells of (N, C, h, w) embedding grids (what next-batch uses, pooled_features)."""
    if embeddings is None:
        return None
    e = np.asarray(embeddings, dtype=np.float32)
    if e.ndim == 2:
        return e
    if e.ndim == 4:
        cells = e.reshape(e.shape[0], e.shape[1], -1)
        return np.concatenate([cells.mean(axis=2), cells.std(axis=2)], axis=1)
    raise UsageError(f"embeddings must be (N, D) or (N, C, h, w), got shape {e.shape}")


def score_tiles(probabilities: np.ndarray, measures: list[str]) -> dict[str, np.ndarray]:
    """Each named measure of :data:`~al_loop.query.uncertainty.PIXEL_MEASURES` per tile: name -> (N,)."""
    classes = class_probabilities(probabilities)
    unknown = [m for m in measures if m not in PIXEL_MEASURES]
    if unknown:
        raise UsageError(f"measure(s) {', '.join(unknown)} need more than one prediction per tile (BALD: MC-dropout "
                         f"samples; rare_types: the decoder's class weights); from arrays use one of {', '.join(PIXEL_MEASURES)}")
    return {m: np.array([PIXEL_MEASURES[m](tile) for tile in classes]) for m in measures}


def select(
    probabilities: np.ndarray,
    k: int,
    strategy: str | Strategy = "entropy",
    embeddings: np.ndarray | None = None,
    rng: np.random.Generator | int | None = None,
    labelled_embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the ``k`` tiles to label next, best first (int array, at most ``k`` long).

    ``probabilities``: (N, H, W) pit probabilities, or (N, K, H, W) class probabilities with
    background first (they sum to 1 over axis 1). ``strategy``: a name of
    :data:`al_loop.STRATEGIES` or a function ``fn(pool: PoolScores, k, rng) -> indices``
    (it gets every pixel measure in ``pool.scores`` and the embeddings in ``pool.features``).
    ``embeddings``: (N, D) or (N, C, h, w), needed by the diversity strategies (coreset,
    typiclust, hybrid, diverse, density, cold_start); ``labelled_embeddings`` (M, D) or
    (M, C, h, w), the tiles labelled so far (what coreset keeps away from, and hybrid counts).
    ``rng``: a Generator or seed, for random, typiclust's and hybrid's k-means."""
    spec = get_strategy(strategy)
    n = len(probabilities)
    features, labelled = pooled(embeddings), pooled(labelled_embeddings)
    if spec.needs_features and features is None:
        raise UsageError(f"strategy {strategy!r} looks at diversity: pass embeddings (one per tile)")
    if features is not None and len(features) != n:
        raise UsageError(f"{len(features)} embeddings for {n} tiles of probabilities")
    user = callable(strategy) or ":" in strategy  # a user's function gets every measure
    measures = list(PIXEL_MEASURES) if user else [spec.needs] if spec.needs else []
    pool = PoolScores(scores=score_tiles(probabilities, measures) if n else {}, features=features,
                      labelled_features=labelled, size=n)
    picked = np.asarray(spec.select(pool, min(int(k), n), np.random.default_rng(rng)), dtype=int)
    if len(set(picked.tolist())) != len(picked) or (len(picked) and (picked.min() < 0 or picked.max() >= n)):
        raise UsageError(f"strategy {strategy!r} returned indices that are repeated or outside 0..{n - 1}")
    return picked[: int(k)]
