"""A pool of tiles on disk, seen through the embedding cache.

``embed_files`` makes sure every tile has its embedding (encoding only misses) and
returns light references; ``score_pool`` streams those embeddings back in small
batches through the decoder and keeps only per-tile scores, so memory stays flat
however large the pool is.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from al_loop.embeddings.cache import EmbeddingCache
from al_loop.models.decoder import DomainDecoder, predict_frames, valid_region
from al_loop.models.encoders import Encoder, valid_shape
from al_loop.data.images import ImageError, content_hash, decode_image
from al_loop.query.strategies import PoolScores
from al_loop.query.uncertainty import PIXEL_MEASURES, bald

MC_SAMPLES = 8


@dataclass(frozen=True)
class TileRef:
    path: str
    sha256: str
    size: tuple[int, int]  # (height, width) of the original tile


@dataclass
class EmbedReport:
    refs: list[TileRef] = field(default_factory=list)
    failures: list[ImageError] = field(default_factory=list)
    hits: int = 0
    misses: int = 0


def embed_files(
    paths: Iterable[str | Path], encoder: Encoder, cache: EmbeddingCache, progress: bool = True
) -> EmbedReport:
    """Encode every tile not yet in the cache; a bad file is reported and skipped."""
    paths = list(paths)
    report = EmbedReport()
    bar = tqdm(paths, desc=f"embed ({encoder.id})", unit="tile", disable=not progress)
    for path in bar:
        try:
            ref, hit = embed_file(path, encoder, cache)
        except ImageError as exc:
            report.failures.append(exc)
            continue
        report.refs.append(ref)
        report.hits += hit
        report.misses += not hit
        bar.set_postfix(hits=report.hits, misses=report.misses, failed=len(report.failures), refresh=False)
    return report


def embed_file(path: str | Path, encoder: Encoder, cache: EmbeddingCache) -> tuple[TileRef, bool]:
    """(reference, was it a cache hit) for one tile file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageError(path, f"cannot be read ({exc.strerror or exc})") from None
    sha = content_hash(data)
    if cache.contains(sha, encoder.id):
        cache.stats.add(hits=1)
        return TileRef(str(path), sha, _header_size(data, path)), True
    tile = decode_image(data, path)
    cache.get_or_compute(sha, encoder.id, lambda: encoder.encode(tile))
    return TileRef(str(path), sha, tile.size), False


def _header_size(data: bytes, path: str | Path) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.height, im.width
    except (OSError, ValueError) as exc:
        raise ImageError(path, f"unreadable header ({exc})") from None


def load_embeddings(refs: Sequence[TileRef], cache: EmbeddingCache, encoder_id: str) -> np.ndarray:
    """(N, C, G, G) float32 for a small set of tiles (a batch, or the labelled set)."""
    return np.stack([np.asarray(cache.load(r.sha256, encoder_id), dtype=np.float32) for r in refs])


def pooled_features(embedding: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Mean and std of each channel over the tile's cells: a scene descriptor for diversity."""
    h, w = valid_shape(size, embedding.shape[-1])
    cells = np.asarray(embedding[:, :h, :w], dtype=np.float32).reshape(embedding.shape[0], -1)
    return np.concatenate([cells.mean(axis=1), cells.std(axis=1)])


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
    """Per-tile uncertainty scores (and pooled embeddings) for ``refs``, streamed in batches."""
    measures = [m for m in measures if m]
    unknown = [m for m in measures if m not in PIXEL_MEASURES and m != "bald"]
    if unknown:
        raise ValueError(f"unknown uncertainty measure(s): {', '.join(unknown)}")
    if measures and decoder is None:
        raise ValueError("uncertainty needs a trained decoder")
    scores = {m: np.zeros(len(refs)) for m in measures}
    pooled = []
    bar = tqdm(total=len(refs), desc="score pool", unit="tile", disable=not progress, leave=False)
    for start in range(0, len(refs), batch_size):
        batch = refs[start : start + batch_size]
        x = load_embeddings(batch, cache, encoder_id)
        if features:
            pooled.extend(pooled_features(e, r.size) for e, r in zip(x, batch))
        pixel = [m for m in measures if m in PIXEL_MEASURES]
        if pixel:
            frames = predict_frames(decoder, x)
            for i, ref in enumerate(batch):
                p = valid_region(frames[i], ref.size)
                for m in pixel:
                    scores[m][start + i] = PIXEL_MEASURES[m](p)
        if "bald" in measures:
            samples = predict_frames(decoder, x, mc_samples=mc_samples)
            for i, ref in enumerate(batch):
                scores["bald"][start + i] = bald(valid_region(samples[:, i], ref.size))
        bar.update(len(batch))
    bar.close()
    return PoolScores(scores=scores, features=np.stack(pooled) if features and pooled else None, size=len(refs))
