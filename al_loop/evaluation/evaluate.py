"""One evaluation of a decoder: pixel metrics against expert masks, object metrics against
expert boxes, over tiles whose embeddings are in the cache (``next-batch`` and ``simulate``)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from al_loop.embeddings.cache import EmbeddingCache
from al_loop.embeddings.embed import TileRef, load_embeddings
from al_loop.evaluation.metrics import Evaluation
from al_loop.models.decoder import DomainDecoder, predict_frames
from al_loop.models.geometry import frame_to_tile
from al_loop.models.pits import min_object_pixels


def evaluate(
    decoder: DomainDecoder,
    tiles: Sequence[TileRef],
    truths: Sequence[np.ndarray],
    expert_boxes: Sequence[np.ndarray],
    cache: EmbeddingCache,
    encoder_id: str,
    batch_size: int = 16,
) -> dict[str, float]:
    """Every metric of :class:`Evaluation` for ``tiles``; ``truths[i]`` is tile i's (H, W)
    expert mask and ``expert_boxes[i]`` its (N, 4) boxes (x0, y0, x1, y1) in pixels."""
    evaluation = Evaluation()
    for start in range(0, len(tiles), batch_size):
        refs = tiles[start : start + batch_size]
        embeddings = load_embeddings(refs, cache, encoder_id)
        frames = predict_frames(decoder, embeddings)
        for i, ref in enumerate(refs):
            evaluation.add(frame_to_tile(frames[i], ref.size), truths[start + i], np.asarray(expert_boxes[start + i]).reshape(-1, 4),
                           min_object_px=min_object_pixels(ref.size, embeddings.shape[-1]))
    return evaluation.summary()
