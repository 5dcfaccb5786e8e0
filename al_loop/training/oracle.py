"""Oracles: an existing set of expert boxes -> training masks, without a person in the loop.

``simulate`` replays the paper's experiment with them, and a lab with boxes from an
earlier catalogue trains from them the same way (``al-loop train``). Both oracles are the
maskers of :mod:`al_loop.training.masks` (``sam``: SAM box prompts, the same clipped
mask the Label Studio backend gives a person; ``box``: the inscribed ellipse, for when
no SAM weights exist). (The simulated expert that answers Label Studio tasks is
:mod:`al_loop.demo.expert`.)
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from al_loop.data.images import content_hash, decode_image, read_bytes
from al_loop.data.yolo import LabelledTile
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.embeddings.embed import TileRef
from al_loop.errors import UsageError
from al_loop.settings import ORACLES
from al_loop.training.masks import BoxMasker, ellipse_masks, sam_masker, typed_masks


class Oracle(Protocol):
    name: str

    def labels(self, tile: LabelledTile) -> np.ndarray:
        """(H, W) uint8 map of the pits boxed on the tile: each box's class + 1, 0 elsewhere
        (``> 0`` is the binary mask)."""
        ...


class MaskerOracle:
    """Every box of a YOLO tile through one masker, typed by its class."""

    def __init__(self, name: str, masker: BoxMasker, reads_pixels: bool):
        self.name, self.masker, self.reads_pixels = name, masker, reads_pixels

    def labels(self, tile: LabelledTile) -> np.ndarray:
        # The SAM masker finds the tile's embedding by content hash; the ellipse needs no pixels.
        sha = content_hash(read_bytes(tile.image)) if self.reads_pixels and len(tile.boxes) else ""
        return typed_masks(self.masker, TileRef(str(tile.image), sha, tile.size), tile.boxes, tile.classes + 1)


class BoxOracle(MaskerOracle):
    def __init__(self):
        super().__init__("box", ellipse_masks, reads_pixels=False)


class SamOracle(MaskerOracle):
    def __init__(self, model: str = "vit_b", checkpoint=None, cache: EmbeddingCache | None = None,
                 precision: str = "fp32", runtime: str | None = None):
        self._recipe = (model, checkpoint, cache, precision, runtime)
        masker = sam_masker(cache or EmbeddingCache(), lambda ref: decode_image(read_bytes(ref.source), ref.source),
                            model=model, checkpoint=checkpoint, precision=precision, runtime=runtime)
        super().__init__("sam", masker, reads_pixels=True)

    def __reduce__(self):
        # The masker is a closure over a loaded model: a worker process builds its own from the recipe.
        return SamOracle, self._recipe


def build_oracle(name: str, model: str = "vit_b", checkpoint=None, cache: EmbeddingCache | None = None,
                 runtime: str | None = None) -> Oracle:
    if name == "box":
        return BoxOracle()
    if name == "sam":
        return SamOracle(model, checkpoint, cache, runtime=runtime)
    raise UsageError(f"unknown oracle {name!r}; choose one of {', '.join(ORACLES)}")

