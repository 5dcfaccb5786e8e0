"""Boxes -> training masks: the one step the loop, the backend and the oracles share.

An expert's box without a painted mask becomes a mask in one of two ways. ``sam``: SAM's
box-prompt mask on the tile's cached SAM embedding, clipped to the box
(:meth:`PromptSegmenter.box_masks`), what the backend shows a person for the same box.
``box``: the ellipse inscribed in the box, the proxy for when there are no SAM weights,
since pits and skylights are round to oval in plan view. Every caller gets its masker
from here, so a box means the same mask wherever it is trained on.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
from skimage.draw import ellipse

from al_loop.data.images import DecodedTile
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.embeddings.embed import TileRef
from al_loop.settings import SAM2_MODELS

if TYPE_CHECKING:  # the encoders bring torch; these modules only name the type
    from al_loop.models.encoders import Encoder


class BoxMasker(Protocol):
    def __call__(self, tile: TileRef, boxes: np.ndarray) -> list[np.ndarray]:
        """One (H, W) bool mask per box (x0, y0, x1, y1) in pixels of ``tile``."""
        ...


def box_labels(boxes: np.ndarray, types: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The ellipses inscribed in ``boxes`` (x0, y0, x1, y1), at least one pixel each, painted
    with their ``types`` (1..K; a later box over an earlier one wins): (H, W) uint8."""
    labels = np.zeros(size, dtype=np.uint8)
    for (x0, y0, x1, y1), kind in zip(np.asarray(boxes, dtype=float).reshape(-1, 4), np.asarray(types).ravel(), strict=False):
        rr, cc = ellipse((y0 + y1) / 2 - 0.5, (x0 + x1) / 2 - 0.5, max((y1 - y0) / 2, 0.5), max((x1 - x0) / 2, 0.5), shape=size)
        labels[rr, cc] = kind
        if not len(rr):  # sub-pixel ellipse: mark the centre pixel
            labels[min(int((y0 + y1) / 2), size[0] - 1), min(int((x0 + x1) / 2), size[1] - 1)] = kind
    return labels


def box_mask(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Union of the ellipses inscribed in ``boxes``: :func:`box_labels` of one type."""
    return box_labels(boxes, np.ones(len(np.asarray(boxes).reshape(-1, 4)), np.uint8), size) > 0


def ellipse_masks(tile: TileRef, boxes: np.ndarray) -> list[np.ndarray]:
    """The ``box`` proxy as a :class:`BoxMasker`: one inscribed ellipse per box."""
    return [box_mask(np.asarray(box)[None], tile.size) for box in np.asarray(boxes, dtype=float).reshape(-1, 4)]


class SamBoxMasks:
    """The ``sam`` masker: SAM box prompts on the tile's SAM embedding. ``embedding`` gives it
    (from the shared cache, encoded once when missing) and ``segmenter`` the prompt decoder, so
    whoever owns SAM (the backend, a lazy loader) decides how and when they load."""

    def __init__(self, segmenter: Callable[[], object], embedding: Callable[[TileRef], np.ndarray]):
        self.segmenter, self.embedding = segmenter, embedding

    def __call__(self, tile: TileRef, boxes: np.ndarray) -> list[np.ndarray]:
        features = self.embedding(tile)  # SAM's embedding, or SAM 2.1's three maps
        if isinstance(features, np.ndarray):
            features = np.asarray(features, dtype=np.float32)
        return [m.mask for m in self.segmenter().box_masks(features, tile.size, boxes)]


def lazy_sam(model: str, checkpoint: str | None = None, precision: str | None = None,
             runtime: str | None = None) -> Callable[[], tuple[Encoder, object]]:
    """SAM's image encoder and prompt segmenter, loaded once, on the first box that needs them."""
    loaded: list = []

    def sam() -> tuple[Encoder, object]:
        if not loaded:
            from al_loop.models.encoders import Sam2Encoder, SamEncoder, encoder_of_model, resolve_engine
            from al_loop.models.sam import PromptSegmenter, load_sam

            engine = resolve_engine(encoder_of_model(model), checkpoint, precision, runtime)
            model_sam, model_id = load_sam(model, checkpoint)
            encoder = (Sam2Encoder(model, checkpoint, engine.precision, engine.runtime, model=model_sam)
                       if model in SAM2_MODELS else SamEncoder(model_sam, model_id, engine.precision, engine.runtime))
            loaded.append((encoder,
                           PromptSegmenter(model_sam, model_id, runtime)))
        return loaded[0]

    return sam


def typed_masks(masker: BoxMasker, tile: TileRef, boxes: np.ndarray, types: Sequence[int]) -> np.ndarray:
    """(H, W) uint8 map of the boxes' masks painted with their types (1..K; later boxes win)."""
    labels = np.zeros(tile.size, dtype=np.uint8)
    if len(np.asarray(boxes).reshape(-1, 4)):
        for mask, kind in zip(masker(tile, np.asarray(boxes, dtype=np.float32).reshape(-1, 4)), types, strict=False):
            labels[mask] = kind
    return labels


def sam_masker(cache: EmbeddingCache, read: Callable[[TileRef], DecodedTile], *, model: str,
               checkpoint: str | None = None, precision: str = "fp32", runtime: str | None = None) -> BoxMasker:
    """The masker for answers that hold bare boxes: SAM box prompts, SAM loaded on the first box,
    its embedding of each tile from ``cache`` (encoded from ``read`` when missing)."""
    sam = lazy_sam(model, checkpoint, precision, runtime)

    def embedding(tile: TileRef):
        encoder = sam()[0]
        if model in SAM2_MODELS:  # SAM 2.1's prompts take its three maps, cached as the backend caches them
            from al_loop.models.sam2 import Sam2Features

            maps = cache.get_or_compute_many(tile.sha256, encoder.map_ids, lambda: encoder.encode_maps(read(tile)))
            return Sam2Features(*(np.asarray(m, np.float32) for m in maps))
        return cache.get_or_compute(tile.sha256, encoder.id, lambda: encoder.encode(read(tile)))

    return SamBoxMasks(lambda: sam()[1], embedding)


def box_masker(cache: EmbeddingCache, read: Callable[[TileRef], DecodedTile], *, model: str,
               checkpoint: str | None = None, precision: str = "fp32",
               runtime: str | None = None) -> tuple[BoxMasker, str | None]:
    """The masker for bare boxes, and what to tell the user about it: SAM box prompts where
    SAM's weights are here; else the box proxy (the inscribed ellipse, what ``--oracle box``
    uses), never masks from a SAM with random weights."""
    from al_loop.models.weights import has_weights

    if has_weights(model, checkpoint):
        return sam_masker(cache, read, model=model, checkpoint=checkpoint, precision=precision, runtime=runtime), None
    return ellipse_masks, (f"no SAM weights for {model}: a box drawn without a mask trains as the ellipse inscribed "
                           f"in it (`al-loop weights download {model}` gives SAM's masks)")
