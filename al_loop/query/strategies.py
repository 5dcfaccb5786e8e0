"""Query strategies: plain functions from per-tile scores to the tiles to label next.

A strategy is ``fn(pool: PoolScores, n: int, rng) -> indices into the pool``, best
first, registered by name in :data:`STRATEGIES` with the score it needs, so the
scoring pass computes only that (MC-dropout for BALD is eight decoder passes). A user's
own function of the same signature is accepted too, as a callable or by its import path
``package.module:function`` (modAL's model: a strategy is any callable); it is given the
tile entropy and the pooled embeddings.

Diversity and typicality (``coreset``, ``typiclust``, ``hybrid``) work on the pooled
embeddings, see :mod:`al_loop.query.diversity`. ``hybrid``'s rule, from typicality at cold
start to uncertainty among diverse candidates, is :func:`hybrid_selection`'s docstring.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from modAL.batch import ranked_batch
from modAL.utils.selection import multi_argmax

from al_loop.errors import UsageError
from al_loop.query.diversity import kcenter_greedy, kmeans_labels, standardise, typiclust


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
    features, labelled = standardise(pool.features, pool.labelled_features)
    learner = SimpleNamespace(on_transformed=False, X_training=labelled)
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
    features, _ = standardise(pool.features)
    values = pool.scores[measure] * information_density(features) ** beta
    idx, _ = multi_argmax(values, n_instances=n)
    return idx[np.argsort(-values[idx], kind="stable")]


def cold_start_selection(pool: PoolScores, n: int, rng: np.random.Generator) -> np.ndarray:
    """Before any label: pure diversity over the embeddings (no model to be uncertain yet)."""
    flat = PoolScores(scores={"none": np.ones(len(pool))}, features=pool.features, labelled_features=pool.labelled_features)
    return diverse_selection(flat, n, rng, measure="none")


def _features(pool: PoolScores, name: str) -> np.ndarray:
    if pool.features is None:
        raise ValueError(f"the {name} strategy needs pooled embeddings")
    return pool.features


def coreset_selection(pool: PoolScores, n: int, rng: np.random.Generator) -> np.ndarray:
    """k-center greedy on the pooled embeddings (Sener & Savarese 2018): the batch that leaves
    no pool tile far from a labelled one."""
    return kcenter_greedy(_features(pool, "coreset"), pool.labelled_features, n)


def typiclust_selection(pool: PoolScores, n: int, rng: np.random.Generator) -> np.ndarray:
    """Typical tiles of clusters no label covers yet (Hacohen et al. 2022), for cold start."""
    return typiclust(_features(pool, "typiclust"), pool.labelled_features, n, rng)


HYBRID_SWITCH = 20  # labelled tiles at which hybrid has moved wholly from typicality to uncertainty
HYBRID_OVERSAMPLE = 5  # uncertain candidates per uncertainty pick, among which diversity chooses


def hybrid_selection(
    pool: PoolScores, n: int, rng: np.random.Generator, measure: str = "entropy",
    switch: int = HYBRID_SWITCH, oversample: int = HYBRID_OVERSAMPLE,
) -> np.ndarray:
    """Typicality at cold start, uncertainty among diverse candidates as labels grow.

    The rule, with m labelled tiles and a batch of n: ``round(n * max(0, 1 - m / switch))``
    picks by TypiClust (typical tiles of uncovered clusters), the rest by cluster-margin
    (Citovsky et al. 2021): the ``oversample`` x (rest) most uncertain tiles not yet picked are
    cut into (rest) clusters by k-means on their pooled embeddings, and each cluster gives its
    most uncertain tile, so the uncertainty picks are not copies of one scene. With the defaults
    (switch 20, batches of 5): 4 typical picks at m = 5, 2 at m = 10, 1 at m = 15, none from
    m = 20. Hacohen et al. place the cross-over from typicality to uncertainty at a few labels per
    class; the HiRISE measurement (docs/results/experiment.md) found uncertainty alone no better
    than random up to 15 tiles, hence the switch at 20."""
    features = _features(pool, "hybrid")
    n = min(n, len(pool))
    labelled = 0 if pool.labelled_features is None else len(pool.labelled_features)
    n_typical = int(round(n * max(0.0, 1.0 - labelled / switch)))
    picked = list(typiclust(features, pool.labelled_features, n_typical, rng)) if n_typical else []
    rest = n - len(picked)
    if rest <= 0:
        return np.asarray(picked, dtype=int)
    uncertainty = np.asarray(pool.scores[measure], dtype=float).copy()
    uncertainty[picked] = -np.inf
    candidates = np.argsort(-uncertainty, kind="stable")[: min(len(pool) - len(picked), oversample * rest)]
    x, _ = standardise(features[candidates])
    ids = kmeans_labels(x, rest, int(rng.integers(2**31 - 1)))
    best = [int(candidates[ids == c][np.argmax(uncertainty[candidates[ids == c]])]) for c in np.unique(ids)]
    best.sort(key=lambda i: -uncertainty[i])
    return np.asarray(picked + best[:rest], dtype=int)


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
    "object_entropy": StrategySpec(_top("object_entropy"), "object_entropy",
                                   help="pixel entropy over predicted pits and their borders, summed over objects"),
    "coreset": StrategySpec(coreset_selection, None, needs_features=True,
                            help="k-center greedy on pooled embeddings (Sener & Savarese 2018)"),
    "typiclust": StrategySpec(typiclust_selection, None, needs_features=True,
                              help="typical tiles of clusters not yet labelled (Hacohen et al. 2022)"),
    "hybrid": StrategySpec(hybrid_selection, "entropy", needs_features=True,
                           help="typicality at cold start, then entropy among diverse candidates"),
}

# A user's strategy is handed the tile entropy and the pooled embeddings.
USER_NEEDS = "entropy"


def get_strategy(name: str | Strategy) -> StrategySpec:
    """The spec of a registered name, of ``package.module:function``, or of a callable
    ``fn(pool: PoolScores, n, rng) -> indices``."""
    if callable(name):
        return StrategySpec(name, USER_NEEDS, needs_features=True, help=getattr(name, "__doc__", "") or "")
    if name in STRATEGIES:
        return STRATEGIES[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise UsageError(f"strategy {name!r}: cannot import {attr!r} from {module!r}: {exc}") from None
        if not callable(fn):
            raise UsageError(f"strategy {name!r} is not a function")
        return get_strategy(fn)
    raise UsageError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)} or give package.module:function")
