"""Oracles: an existing set of expert boxes -> training masks, without a person in the loop.

``simulate`` replays the paper's experiment with them, and a lab with boxes from an
earlier catalogue trains from them the same way. ``sam`` prompts SAM with each box (the
paper's choice, and the same clipped box-prompt mask the Label Studio backend gives a
person: :meth:`PromptSegmenter.box_masks`). ``box`` is the proxy for when no SAM
weights exist: the ellipse inscribed in each box, since pits and skylights are round to
oval in plan view. (The simulated expert that answers Label Studio tasks is
:mod:`al_loop.sim.expert`.)
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
from skimage.draw import ellipse

from al_loop.data.yolo import LabelledTile
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.embeddings.embed import embed_file
from al_loop.errors import UsageError

ORACLES = ("sam", "box")


class Oracle(Protocol):
    name: str

    def labels(self, tile: LabelledTile) -> np.ndarray:
        """(H, W) uint8 map of the pits boxed on the tile: each box's class + 1, 0 elsewhere
        (``> 0`` is the binary mask)."""
        ...


def box_labels(boxes: np.ndarray, types: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The ellipses inscribed in ``boxes`` (x0, y0, x1, y1), at least one pixel each, painted
    with their ``types`` (1..K; a later box over an earlier one wins)."""
    labels = np.zeros(size, dtype=np.uint8)
    for (x0, y0, x1, y1), kind in zip(np.asarray(boxes, dtype=float).reshape(-1, 4), np.asarray(types).ravel()):
        rr, cc = ellipse((y0 + y1) / 2 - 0.5, (x0 + x1) / 2 - 0.5, max((y1 - y0) / 2, 0.5), max((x1 - x0) / 2, 0.5), shape=size)
        labels[rr, cc] = kind
        if not len(rr):  # sub-pixel ellipse: mark the centre pixel
            labels[min(int((y0 + y1) / 2), size[0] - 1), min(int((x0 + x1) / 2), size[1] - 1)] = kind
    return labels


def box_mask(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Union of the ellipses inscribed in ``boxes``: :func:`box_labels` of one type."""
    return box_labels(boxes, np.ones(len(np.asarray(boxes).reshape(-1, 4)), np.uint8), size) > 0


class BoxOracle:
    name = "box"

    def labels(self, tile: LabelledTile) -> np.ndarray:
        return box_labels(tile.boxes, tile.classes + 1, tile.size)


class SamOracle:
    """SAM box prompts on the tile's cached SAM embedding (encoded once, like any tile)."""

    name = "sam"

    def __init__(self, model: str = "vit_b", checkpoint=None, cache: EmbeddingCache | None = None):
        from al_loop.models.encoders import LazyEncoder

        self.encoder = LazyEncoder(f"sam-{model}", checkpoint)
        self.cache = cache or EmbeddingCache()
        self._segmenter = None

    def labels(self, tile: LabelledTile) -> np.ndarray:
        labels = np.zeros(tile.size, dtype=np.uint8)
        if not len(tile.boxes):
            return labels
        ref, _ = embed_file(tile.image, self.encoder, self.cache)
        embedding = np.asarray(self.cache.load(ref.sha256, self.encoder.id), dtype=np.float32)
        for result, kind in zip(self.segmenter.box_masks(embedding, tile.size, tile.boxes), tile.classes + 1):
            labels[result.mask] = kind
        return labels

    @property
    def segmenter(self):
        if self._segmenter is None:
            from al_loop.models.sam import PromptSegmenter

            self._segmenter = PromptSegmenter(self.encoder.loaded.sam)
        return self._segmenter


def build_oracle(name: str, model: str = "vit_b", checkpoint=None, cache: EmbeddingCache | None = None) -> Oracle:
    if name == "box":
        return BoxOracle()
    if name == "sam":
        return SamOracle(model, checkpoint, cache)
    raise UsageError(f"unknown oracle {name!r}; choose one of {', '.join(ORACLES)}")
