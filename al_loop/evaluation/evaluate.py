"""One evaluation of a decoder: pixel metrics against expert masks, object metrics against
expert boxes, over tiles whose embeddings are in the cache (``next-batch`` and ``simulate``)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from al_loop.embeddings.cache import EmbeddingCache
from al_loop.embeddings.embed import TileRef, load_embeddings
from al_loop.evaluation.metrics import Evaluation
from al_loop.models.decoder import DomainDecoder, predict_class_frames
from al_loop.models.geometry import frame_to_tile
from al_loop.models.pits import min_object_pixels, pit_probability


def evaluate_decoder(
    decoder: DomainDecoder,
    tiles: Sequence[TileRef],
    truths: Sequence[np.ndarray],
    expert_boxes: Sequence[np.ndarray],
    cache: EmbeddingCache,
    encoder_id: str,
    batch_size: int = 16,
    type_names: Sequence[str] = ("pit",),
    expert_types: Sequence[np.ndarray] | None = None,
) -> dict[str, float]:
    """Every metric of :class:`Evaluation` for ``tiles``; ``truths[i]`` is tile i's (H, W)
    expert mask (a type number per pixel when typed) and ``expert_boxes[i]`` its (N, 4) boxes
    (x0, y0, x1, y1) in pixels, of types ``expert_types[i]`` (1..K). With more than one
    type name the per-type metrics come too."""
    if len(type_names) != decoder.types:
        raise ValueError(f"the decoder scores {decoder.types} type(s), not the {len(type_names)} named")
    evaluation = Evaluation.of_types(tuple(type_names))
    for start in range(0, len(tiles), batch_size):
        refs = tiles[start : start + batch_size]
        embeddings = load_embeddings(refs, cache, encoder_id)
        frames = predict_class_frames(decoder, embeddings)
        for i, ref in enumerate(refs):
            probs = np.stack([frame_to_tile(f, ref.size) for f in frames[i]]) if evaluation.types else \
                frame_to_tile(pit_probability(frames[i]), ref.size)
            evaluation.add(probs, truths[start + i], np.asarray(expert_boxes[start + i]).reshape(-1, 4),
                           min_object_px=min_object_pixels(ref.size, embeddings.shape[-1]),
                           expert_types=None if expert_types is None else expert_types[start + i])
    return evaluation.summary()
