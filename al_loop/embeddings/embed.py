"""Tiles into the embedding cache, and light references to them for everything after.

``embed_files`` makes sure every tile has its embedding (encoding only misses) and
returns :class:`TileRef` records: the embedding-level record of a tile (where it came from,
its content hash, its size) that training, selection and evaluation take.
"""
from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from tqdm import tqdm

from al_loop.data.images import content_hash, decode_image, read_bytes
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.errors import ImageError
from al_loop.models.geometry import valid_shape

if TYPE_CHECKING:  # the encoders bring torch; these modules only name the type
    from al_loop.models.encoders import Encoder


@dataclass(frozen=True)
class TileRef:
    source: str  # a file path or a task's image URL
    sha256: str  # the cache key
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
    data = read_bytes(path)
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
