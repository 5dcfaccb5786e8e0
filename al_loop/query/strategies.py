"""Query strategies: plain functions from per-tile scores to the tiles to label next.

A strategy is ``fn(pool: PoolScores, n: int, rng) -> indices into the pool``, best
first, registered by name in :data:`STRATEGIES` with the score it needs, so the
scoring pass computes only that (MC-dropout for BALD is eight decoder passes).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from modAL.batch import ranked_batch
from modAL.utils.selection import multi_argmax

from al_loop.errors import UsageError


@dataclass
class PoolScores:
    """What a strategy may look at, for the ``n`` unlabelled tiles of a pool."""

    scores: dict[str, np.ndarray]  # measure name -> (n,), higher = more uncertain
    features: np.ndarray | None = None  # (n, d) pooled embeddings, for diversity
    labelled_features: np.ndarray | None = None  # (m, d) of the labelled tiles
    size: int | None = None  # pool size, when neither scores nor features say it

    def __len__(self) -> int:
        if self.size is not None:
            return self.size
        if self.features is not None:
            return len(self.features)
        if self.scores:
            return len(next(iter(self.scores.values())))
        raise ValueError("PoolScores has no size: give scores, features or size")


Strategy = Callable[[PoolScores, int, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class StrategySpec:
    select: Strategy
    needs: str | None  # the score the scoring pass must compute, None for none
    needs_features: bool = False
    help: str = ""


def _top(measure: str) -> Strategy:
    def select(pool: PoolScores, n: int, rng: np.random.Generator) -> np.ndarray:
        values = pool.scores[measure]
        n = min(n, len(values))
        if n == 0:
            return np.zeros(0, dtype=int)
        idx, _ = multi_argmax(values, n_instances=n)
        return idx[np.argsort(-values[idx], kind="stable")]

    return select


def random_selection(pool: PoolScores, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(len(pool))[: min(n, len(pool))]


def diverse_selection(pool: PoolScores, n: int, rng: np.random.Generator, measure: str = "entropy") -> np.ndarray:
    """modAL's ranked batch-mode sampling: uncertainty traded against distance to what is
    already labelled or chosen, so a batch is not five copies of one scene."""
    if pool.features is None:
        raise ValueError("the diverse strategy needs pooled embeddings")
    n = min(n, len(pool))
    if n == 0:
        return np.zeros(0, dtype=int)
    uncertainty = pool.scores.get(measure, np.ones(len(pool)))
    labelled = pool.labelled_features
    features, labelled = _standardise(pool.features, labelled)
    learner = SimpleNamespace(on_transformed=False, X_training=labelled if labelled is not None and len(labelled) else None)
    ranking, _ = ranked_batch(learner, unlabeled=features, uncertainty_scores=uncertainty, n_instances=n, metric="euclidean", n_jobs=1)
    return np.asarray(ranking, dtype=int).ravel()[:n]


def information_density(features: np.ndarray, block: int = 512) -> np.ndarray:
    """modAL's information density (mean of 1 / (1 + euclidean distance) to every pool
    tile), computed in row blocks so a 5 000-tile pool never holds an n x n matrix."""
    x = np.asarray(features, dtype=np.float64)
    sq = (x * x).sum(axis=1)
    out = np.empty(len(x))
    for start in range(0, len(x), block):
        rows = x[start : start + block]
        d2 = sq[start : start + block, None] + sq[None, :] - 2.0 * rows @ x.T
        out[start : start + block] = (1.0 / (1.0 + np.sqrt(np.maximum(d2, 0.0)))).mean(axis=1)
    return out


def density_weighted_selection(
    pool: PoolScores, n: int, rng: np.random.Generator, measure: str = "entropy", beta: float = 1.0
) -> np.ndarray:
    """Uncertainty times information density (Settles & Craven 2008).

    Plain uncertainty favours outliers: a decoder trained on a few tiles is least sure
    on scenes unlike any of them (on HiRISE, darker tiles far from the pool's centre),
    and a label there teaches little about the rest. Weighting by how typical a tile is
    of the pool keeps the pick uncertain but representative."""
    if pool.features is None:
        raise ValueError("the density strategy needs pooled embeddings")
    n = min(n, len(pool))
    if n == 0:
        return np.zeros(0, dtype=int)
    features, _ = _standardise(pool.features, None)
    values = pool.scores[measure] * information_density(features) ** beta
    idx, _ = multi_argmax(values, n_instances=n)
    return idx[np.argsort(-values[idx], kind="stable")]


def cold_start_selection(pool: PoolScores, n: int, rng: np.random.Generator) -> np.ndarray:
    """Before any label: pure diversity over the embeddings (no model to be uncertain yet)."""
    flat = PoolScores(scores={"none": np.ones(len(pool))}, features=pool.features, labelled_features=pool.labelled_features)
    return diverse_selection(flat, n, rng, measure="none")


def _standardise(features: np.ndarray, labelled: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    both = features if labelled is None or not len(labelled) else np.concatenate([features, labelled])
    mean, std = both.mean(axis=0), both.std(axis=0) + 1e-6
    return (features - mean) / std, None if labelled is None else (labelled - mean) / std


STRATEGIES: dict[str, StrategySpec] = {
    "entropy": StrategySpec(_top("entropy"), "entropy", help="highest mean pixel entropy"),
    "margin": StrategySpec(_top("margin"), "margin", help="smallest mean pixel margin"),
    "least_confident": StrategySpec(_top("least_confident"), "least_confident", help="lowest mean max-probability"),
    "bald": StrategySpec(_top("bald"), "bald", help="MC-dropout mutual information (BALD)"),
    "rare_types": StrategySpec(_top("rare_types"), "rare_types",
                               help="entropy weighted towards the pit types least labelled so far"),
    "random": StrategySpec(random_selection, None, help="uniform random baseline"),
    "diverse": StrategySpec(diverse_selection, "entropy", needs_features=True, help="entropy + ranked batch-mode diversity (modAL)"),
    "density": StrategySpec(
        density_weighted_selection, "entropy", needs_features=True, help="entropy x information density (modAL): uncertain and typical"
    ),
    "cold_start": StrategySpec(cold_start_selection, None, needs_features=True, help="diversity only, for round 0"),
}


def get_strategy(name: str) -> StrategySpec:
    if name not in STRATEGIES:
        raise UsageError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]
