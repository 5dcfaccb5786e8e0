"""Choosing the next tiles of a pool: the pool scored through the decoder, then a strategy.

``score_pool`` streams embeddings from the cache in small batches through the decoder
and keeps only per-tile scores, so memory stays flat however large the pool is.
``select_from_pool`` is the one way a round picks tiles, in ``next-batch`` and in ``simulate``;
:func:`al_loop.query.select.select` is the same on plain arrays, with no cache or decoder.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from al_loop.embeddings.cache import EmbeddingCache
from al_loop.embeddings.embed import TileRef, load_embeddings, pooled_features
from al_loop.models.decoder import DomainDecoder, predict_class_frames
from al_loop.models.geometry import valid_region
from al_loop.query.strategies import PoolScores, Strategy, get_strategy
from al_loop.query.uncertainty import PIXEL_MEASURES, bald_from, pixel_entropy, rare_type_entropy

DECODER_MEASURES = (*PIXEL_MEASURES, "rare_types", "bald")

MC_SAMPLES = 8


def select_from_pool(
    strategy: str | Strategy,
    decoder: DomainDecoder | None,
    candidates: Sequence[TileRef],
    labelled: Sequence[TileRef],
    n: int,
    cache: EmbeddingCache,
    encoder_id: str,
    rng: np.random.Generator,
    progress: bool = True,
) -> list[tuple[int, float | None]]:
    """The strategy's top ``n`` candidates, best first, as (index into ``candidates``, the
    score that ranked it; None for strategies without one)."""
    spec = get_strategy(strategy)
    if not candidates or n <= 0:
        return []
    pool = score_pool(decoder, candidates, cache, encoder_id, measures=[spec.needs] if spec.needs else [], features=spec.needs_features,
                      progress=progress)
    if spec.needs_features and labelled:
        pool.labelled_features = np.stack([pooled_features(cache.load(r.sha256, encoder_id), r.size) for r in labelled])
    picked = spec.select(pool, n, rng)
    values = pool.scores.get(spec.needs) if spec.needs else None
    return [(int(i), None if values is None else float(values[i])) for i in picked]


def _check_measures(measures: Iterable[str], decoder: DomainDecoder | None) -> list[str]:
    measures = [m for m in measures if m]
    unknown = [m for m in measures if m not in DECODER_MEASURES]
    if unknown:
        raise ValueError(f"unknown uncertainty measure(s): {', '.join(unknown)}")
    if measures and decoder is None:
        raise ValueError("uncertainty needs a trained decoder")
    return measures


def score_pool(
    decoder: DomainDecoder | None,
    refs: Sequence[TileRef],
    cache: EmbeddingCache,
    encoder_id: str,
    measures: Iterable[str] = (),
    features: bool = False,
    mc_samples: int = MC_SAMPLES,
    batch_size: int = 16,
    progress: bool = True,
) -> PoolScores:
    """Per-tile uncertainty scores (and pooled embeddings (n, 2C)) for ``refs``, streamed in batches."""
    measures = _check_measures(measures, decoder)
    scores = {m: np.zeros(len(refs)) for m in measures}
    pooled: list[np.ndarray] = []
    bar = tqdm(total=len(refs), desc="score pool", unit="tile", disable=not progress, leave=False)
    for start in range(0, len(refs), batch_size):
        batch = refs[start : start + batch_size]
        x = load_embeddings(batch, cache, encoder_id)
        if features:
            pooled.extend(pooled_features(e, r.size) for e, r in zip(x, batch, strict=True))
        for m, values in _score_batch(decoder, x, batch, measures, mc_samples).items():
            scores[m][start : start + len(batch)] = values
        bar.update(len(batch))
    bar.close()
    return PoolScores(scores=scores, features=np.stack(pooled) if features and pooled else None, size=len(refs))


def _score_batch(
    decoder: DomainDecoder | None, x: np.ndarray, batch: Sequence[TileRef], measures: list[str], mc_samples: int
) -> dict[str, list[float]]:
    """Each measure's scores of one batch of embeddings (B, C, G, G)."""
    out: dict[str, list[float]] = {}
    deterministic = [m for m in measures if m != "bald"]
    if deterministic:
        frames = predict_class_frames(decoder, x)
        regions = [valid_region(frames[i], ref.size) for i, ref in enumerate(batch)]
        for m in deterministic:
            out[m] = [_measure(m, probs, decoder) for probs in regions]
    if "bald" in measures:
        out["bald"] = _bald(decoder, x, batch, mc_samples)
    return out


def _measure(name: str, probs: np.ndarray, decoder: DomainDecoder) -> float:
    if name == "rare_types":
        return rare_type_entropy(probs, decoder.class_weights)
    return PIXEL_MEASURES[name](probs)


def _bald(decoder: DomainDecoder, x: np.ndarray, refs: Sequence[TileRef], samples: int) -> list[float]:
    """BALD per tile from ``samples`` MC-dropout passes, summed as they come (a batch of K+1
    class maps per pass, never all passes at once)."""
    sum_probs = sum_entropy = None
    for _ in range(samples):
        frames = predict_class_frames(decoder, x, sample=True)
        entropy = np.stack([pixel_entropy(f) for f in frames])
        sum_probs = frames if sum_probs is None else sum_probs + frames
        sum_entropy = entropy if sum_entropy is None else sum_entropy + entropy
    return [bald_from(valid_region(sum_probs[i] / samples, ref.size), valid_region(sum_entropy[i] / samples, ref.size))
            for i, ref in enumerate(refs)]


def predict_stop_set(
    decoder: DomainDecoder, refs: Sequence[TileRef], cache: EmbeddingCache, encoder_id: str, batch_size: int = 16
) -> list[np.ndarray]:
    """The decoder's class probabilities (K+1, h, w) over each stop-set tile's valid region (float16,
    for :func:`al_loop.query.stopping.agreement` between consecutive decoders)."""
    out: list[np.ndarray] = []
    for start in range(0, len(refs), batch_size):
        batch = refs[start : start + batch_size]
        frames = predict_class_frames(decoder, load_embeddings(batch, cache, encoder_id))
        out.extend(valid_region(frames[i], ref.size).astype(np.float16) for i, ref in enumerate(batch))
    return out
