"""Choosing the next tiles of a pool: the pool scored through the decoder, then a strategy.

``score_pool`` streams embeddings from the cache in small batches through the decoder
and keeps only per-tile scores, so memory stays flat however large the pool is.
``select_from_pool`` is the one way a round picks tiles, in ``next-batch`` and in ``simulate``;
:func:`al_loop.query.select.select` is the same on plain arrays, with no cache or decoder.

Scoring runs the decoder cell by cell (:meth:`DomainDecoder.forward_cells`, three matrix
products): the same maps as its transposed convolutions to float rounding (1e-7), in half the
time on a CPU. :class:`PooledFeatures` keeps each tile's pooled embedding once computed, for a
caller that asks for the same pool every round (``simulate``).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from al_loop.embeddings.cache import EmbeddingCache
from al_loop.embeddings.embed import TileRef, load_embeddings, pooled_features
from al_loop.models.decoder import UPSCALE, DomainDecoder, autocast, bf16_is_fast, class_probabilities, predict_class_frames
from al_loop.models.geometry import valid_region
from al_loop.models.pits import min_object_pixels
from al_loop.query.strategies import PoolScores, Strategy, get_strategy
from al_loop.query.uncertainty import PIXEL_MEASURES, bald_from, object_entropy, pixel_entropy, rare_type_entropy

DECODER_MEASURES = (*PIXEL_MEASURES, "rare_types", "bald")

MC_SAMPLES = 8


class PooledFeatures:
    """Each tile's pooled embedding (2C,), :func:`pooled_features` of its cached embedding, computed
    on first use and kept: a simulation asks for the same pool's features every round of every
    run, and each costs a read of the whole embedding."""

    def __init__(self, cache: EmbeddingCache, encoder_id: str):
        self.cache, self.encoder_id = cache, encoder_id
        self._kept: dict[str, np.ndarray] = {}

    def __call__(self, refs: Sequence[TileRef]) -> np.ndarray:
        """(n, 2C) float32 for ``refs``, in their order."""
        for r in refs:
            if r.sha256 not in self._kept:
                self._kept[r.sha256] = pooled_features(self.cache.load(r.sha256, self.encoder_id), r.size)
        return np.stack([self._kept[r.sha256] for r in refs])


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
    pooled: PooledFeatures | None = None,
) -> list[tuple[int, float | None]]:
    """The strategy's top ``n`` candidates, best first, as (index into ``candidates``, the
    score that ranked it; None for strategies without one). ``pooled`` keeps the tiles' pooled
    embeddings between calls (computed from the cache when not given)."""
    spec = get_strategy(strategy)
    if not candidates or n <= 0:
        return []
    pooled = pooled or PooledFeatures(cache, encoder_id)
    pool = score_pool(decoder, candidates, cache, encoder_id, measures=[spec.needs] if spec.needs else [], features=spec.needs_features,
                      progress=progress, pooled=pooled)
    if spec.needs_features and labelled:
        pool.labelled_features = pooled(labelled)
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
    pooled: PooledFeatures | None = None,
) -> PoolScores:
    """Per-tile uncertainty scores (and pooled embeddings (n, 2C)) for ``refs``, streamed in
    batches; with ``pooled`` the features come from it, and with no measure to score no
    embedding is read at all."""
    measures = _check_measures(measures, decoder)
    scores = {m: np.zeros(len(refs)) for m in measures}
    pool_here = features and pooled is None  # pooled from the embeddings read for scoring
    collected: list[np.ndarray] = []
    bar = tqdm(total=len(refs), desc="score pool", unit="tile", disable=not progress, leave=False)
    for start in range(0, len(refs) if measures or pool_here else 0, batch_size):
        batch = refs[start : start + batch_size]
        x = load_embeddings(batch, cache, encoder_id)
        if pool_here:
            collected.extend(pooled_features(e, r.size) for e, r in zip(x, batch, strict=True))
        for m, values in _score_batch(decoder, x, batch, measures, mc_samples).items():
            scores[m][start : start + len(batch)] = values
        bar.update(len(batch))
    bar.close()
    kept = None
    if features and refs:
        kept = np.stack(collected) if pool_here else pooled(refs)
    return PoolScores(scores=scores, features=kept, size=len(refs))


def _score_batch(
    decoder: DomainDecoder | None, x: np.ndarray, batch: Sequence[TileRef], measures: list[str], mc_samples: int
) -> dict[str, list[float]]:
    """Each measure's scores of one batch of embeddings (B, C, G, G)."""
    out: dict[str, list[float]] = {}
    deterministic = [m for m in measures if m != "bald"]
    if deterministic:
        frames = class_frames(decoder, x)
        regions = [valid_region(frames[i], ref.size) for i, ref in enumerate(batch)]
        # a pit counts for object_entropy from two embedding cells up, as pre-annotation draws it
        min_pixels = min_object_pixels((frames.shape[-1],) * 2, x.shape[-1])
        for m in deterministic:
            out[m] = [_measure(m, probs, decoder, min_pixels) for probs in regions]
    if "bald" in measures:
        out["bald"] = _bald(decoder, x, batch, mc_samples)
    return out


def _measure(name: str, probs: np.ndarray, decoder: DomainDecoder, min_pixels: int) -> float:
    if name == "rare_types":
        return rare_type_entropy(probs, decoder.class_weights)
    if name == "object_entropy":
        return object_entropy(probs, min_pixels=min_pixels)
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


@torch.inference_mode()
def class_frames(decoder: DomainDecoder, embeddings: np.ndarray) -> np.ndarray:
    """:func:`~al_loop.models.decoder.predict_class_frames` (dropout off) computed cell by cell:
    class probabilities (N, K+1, 8G, 8G), background first, for embeddings (N, C, G, G). Every
    output pixel depends on one embedding cell, so the frame is the cells' 8x8 patches put in
    place; the same numbers to float rounding, about twice as fast on a CPU as the transposed
    convolutions."""
    x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    n, channels, g, _ = x.shape
    decoder.eval()
    with autocast(bf16_is_fast()):
        logits = decoder.forward_cells(x.permute(0, 2, 3, 1).reshape(-1, channels)).float()  # (N*G*G, K, 8, 8)
    k = logits.shape[1]
    logits = logits.reshape(n, g, g, k, UPSCALE, UPSCALE).permute(0, 3, 1, 4, 2, 5).reshape(n, k, g * UPSCALE, g * UPSCALE)
    return class_probabilities(logits).numpy()


def predict_stop_set(
    decoder: DomainDecoder, refs: Sequence[TileRef], cache: EmbeddingCache, encoder_id: str, batch_size: int = 16
) -> list[np.ndarray]:
    """The decoder's class probabilities (K+1, h, w) over each stop-set tile's valid region (float16,
    for :func:`al_loop.query.stopping.agreement` between consecutive decoders)."""
    out: list[np.ndarray] = []
    for start in range(0, len(refs), batch_size):
        batch = refs[start : start + batch_size]
        frames = class_frames(decoder, load_embeddings(batch, cache, encoder_id))
        out.extend(valid_region(frames[i], ref.size).astype(np.float16) for i, ref in enumerate(batch))
    return out
