"""Diversity and typicality on pooled tile embeddings: pure numeric functions on arrays.

Every function takes the pool's features, an array (n, d) (one pooled embedding per tile,
e.g. :func:`al_loop.embeddings.embed.pooled_features`: the mean and std of each channel), and
the labelled tiles' features (m, d) or None, and returns indices into the pool, best first.

- :func:`kcenter_greedy`: the core-set of Sener & Savarese (2018): each pick is the tile
  farthest from everything labelled or picked, so the batch covers the pool.
- :func:`typiclust`: TypiClust of Hacohen, Dekel & Weinshall (2022): the pool (with the
  labelled tiles) cut into |labelled| + k clusters by k-means; from the largest clusters that
  hold no labelled tile yet, the most *typical* tile (highest inverse mean distance to its
  nearest neighbours in its cluster). Outliers are never typical, so they are not picked.
- :func:`typicality`: that density score.

Features are standardised over pool and labelled together first (channels of a filter bank
differ in scale by orders of magnitude).
"""
from __future__ import annotations

import numpy as np

TYPICALITY_NEIGHBOURS = 20  # Hacohen et al.: K = 20 nearest neighbours
MIN_CLUSTER_SIZE = 5  # TypiClust leaves out clusters smaller than this (they are outliers' clusters)
MAX_CLUSTERS = 500  # TypiClust's cap on |labelled| + k


def standardise(features: np.ndarray, labelled: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Both sets z-scored by the mean and std of their union, per channel."""
    features = np.asarray(features, dtype=np.float64)
    has_labelled = labelled is not None and len(labelled) > 0
    both = np.concatenate([features, labelled]) if has_labelled else features
    mean, std = both.mean(axis=0), both.std(axis=0) + 1e-6
    return (features - mean) / std, ((np.asarray(labelled, dtype=np.float64) - mean) / std) if has_labelled else None


def _min_sq_distance(x: np.ndarray, centres: np.ndarray, block: int = 1024) -> np.ndarray:
    """Squared euclidean distance from each row of ``x`` to its nearest row of ``centres``, in blocks."""
    out = np.full(len(x), np.inf)
    sq = (x * x).sum(axis=1)
    for start in range(0, len(centres), block):
        c = centres[start : start + block]
        d2 = sq[:, None] + (c * c).sum(axis=1)[None, :] - 2.0 * x @ c.T
        out = np.minimum(out, np.maximum(d2, 0.0).min(axis=1))
    return out


def kcenter_greedy(features: np.ndarray, labelled: np.ndarray | None, k: int) -> np.ndarray:
    """k-center greedy (Sener & Savarese 2018): ``k`` indices into ``features`` (n, d), each the
    tile farthest from the labelled tiles (m, d) and the picks before it. Without labelled tiles
    the first pick is the tile nearest the pool's mean (the most central one), so the result is
    deterministic."""
    x, centres = standardise(features, labelled)
    k = min(int(k), len(x))
    if k <= 0:
        return np.zeros(0, dtype=int)
    if centres is None:
        nearest = np.full(len(x), np.inf)
        first = int(np.argmin(((x - x.mean(axis=0)) ** 2).sum(axis=1)))
    else:
        nearest = _min_sq_distance(x, centres)
        first = int(np.argmax(nearest))
    picks = [first]
    nearest = np.minimum(nearest, ((x - x[first]) ** 2).sum(axis=1))
    for _ in range(k - 1):
        nearest[picks] = -1.0  # never picked twice (duplicates sit at distance 0)
        nxt = int(np.argmax(nearest))
        picks.append(nxt)
        nearest = np.minimum(nearest, ((x - x[nxt]) ** 2).sum(axis=1))
    return np.asarray(picks, dtype=int)


def typicality(features: np.ndarray, neighbours: int = TYPICALITY_NEIGHBOURS) -> np.ndarray:
    """Typicality of each row of ``features`` (n, d) among the others: 1 / (mean euclidean
    distance to its ``neighbours`` nearest rows); (n,), higher = more typical. A single row
    has typicality 1 by convention."""
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(features, dtype=np.float64)
    if len(x) < 2:
        return np.ones(len(x))
    k = min(neighbours, len(x) - 1)
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return 1.0 / (distances[:, 1:].mean(axis=1) + 1e-8)


def kmeans_labels(x: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """Cluster labels (n,) of ``x`` by k-means: full k-means up to 50 clusters, mini-batch above
    (TypiClust's choice, for speed on large pools)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    clusters = max(1, min(int(clusters), len(x)))
    if clusters <= 50:
        model = KMeans(n_clusters=clusters, n_init=3, random_state=seed)
    else:
        model = MiniBatchKMeans(n_clusters=clusters, n_init=3, random_state=seed, batch_size=1024)
    return model.fit_predict(x)


def typiclust(
    features: np.ndarray, labelled: np.ndarray | None, k: int, rng: np.random.Generator,
    neighbours: int = TYPICALITY_NEIGHBOURS, min_cluster_size: int = MIN_CLUSTER_SIZE,
) -> np.ndarray:
    """TypiClust (Hacohen et al. 2022): ``k`` indices into ``features`` (n, d).

    Pool and labelled tiles (m, d) are clustered together into min(m + k, 500) clusters. Each
    pick goes to the cluster with the fewest labelled-or-picked tiles, the largest first among
    those, and takes its most typical unpicked pool tile (typicality within the cluster).
    Clusters smaller than ``min_cluster_size`` are left out while larger ones remain."""
    x, lab = standardise(features, labelled)
    k = min(int(k), len(x))
    if k <= 0:
        return np.zeros(0, dtype=int)
    m = 0 if lab is None else len(lab)
    every = x if lab is None else np.concatenate([x, lab])
    ids = kmeans_labels(every, min(m + k, MAX_CLUSTERS, len(every)), int(rng.integers(2**31 - 1)))
    pool_ids, labelled_ids = ids[: len(x)], ids[len(x) :]
    clusters = np.unique(pool_ids)
    size = {c: int((ids == c).sum()) for c in clusters}
    covered = {c: int((labelled_ids == c).sum()) for c in clusters}
    eligible = [c for c in clusters if size[c] >= min_cluster_size] or list(clusters)
    typical = {}
    picked: list[int] = []
    chosen = np.zeros(len(x), dtype=bool)
    for _ in range(k):
        open_clusters = [c for c in eligible if (~chosen[pool_ids == c]).any()]
        if not open_clusters:  # every eligible cluster exhausted: the small ones after all
            eligible = [c for c in clusters if (~chosen[pool_ids == c]).any()]
            open_clusters = eligible
        c = min(open_clusters, key=lambda c: (covered[c], -size[c], c))
        members = np.flatnonzero(pool_ids == c)
        if c not in typical:
            typical[c] = typicality(every[ids == c], neighbours)[: len(members)]  # pool members come first
        scores = np.where(chosen[members], -np.inf, typical[c])
        best = int(members[int(np.argmax(scores))])
        picked.append(best)
        chosen[best] = True
        covered[c] += 1
    return np.asarray(picked, dtype=int)
