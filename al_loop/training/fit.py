"""The one path from expert boxes on YOLO tiles to a decoder: ``al-loop train`` and the experiment.

A :class:`TrainingRecipe` says what a decoder is trained with (encoder, SAM model and
engine, oracle, epochs); its defaults are the settings' own (:mod:`al_loop.settings`), so
a decoder trained from Python without arguments is the one the command line trains
without flags. :func:`embed_tiles` embeds the tiles once, :class:`OracleMasks` turns each
tile's boxes into its training mask on first use, and :func:`train_on_tiles` trains on any
subset of them: the data set's share kept after holding some back (``mapping.from_dataset``),
or the tiles labelled so far in a simulated round (``experiment.simulate``).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from al_loop.data.yolo import LabelledTile
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.embeddings.embed import TileRef, embed_files
from al_loop.errors import UsageError
from al_loop.models.decoder import DomainDecoder
from al_loop.models.encoders import LazyEncoder, encoder_spec
from al_loop.settings import Settings
from al_loop.training.oracle import Oracle, build_oracle
from al_loop.training.train import TrainingSet, train_decoder


def _default(name: str) -> Any:
    """A setting's default, so that no default is restated here."""
    return next(f.default for f in fields(Settings) if f.name == name)


@dataclass(frozen=True)
class TrainingRecipe:
    """What a decoder is trained with; each default is the setting of the same name's."""

    encoder: str = _default("encoder")
    model: str = _default("model")  # SAM model of the sam oracle (and of sam-* encoders' weights)
    checkpoint: str | None = _default("checkpoint")
    precision: str | None = _default("precision")  # None: the engine measured fastest that keeps the contract
    runtime: str | None = _default("runtime")  # SAM's image-encoder engine (None: the machine's default)
    oracle: str = "box"  # how boxes become masks: box (inscribed ellipse) or sam (SAM box prompts)
    epochs: int = _default("epochs")

    @classmethod
    def of(cls, settings: Settings, oracle: str = "box") -> TrainingRecipe:
        """The recipe resolved settings give (what the command line trains with)."""
        return cls(settings.encoder, settings.model, settings.checkpoint, settings.precision, settings.runtime, oracle,
                   settings.epochs)

    def lazy_encoder(self) -> LazyEncoder:
        """The encoder whose embeddings the decoder learns on (the checkpoint only for SAM's)."""
        checkpoint = self.checkpoint if encoder_spec(self.encoder).sam_model else None
        return LazyEncoder(self.encoder, checkpoint, self.precision, self.runtime)

    def build_oracle(self, cache: EmbeddingCache) -> Oracle:
        return build_oracle(self.oracle, self.model, self.checkpoint, cache, self.runtime)


@dataclass
class EmbeddedTiles:
    """Tiles whose embeddings are in the cache, with their refs (same order); ``failures`` the
    files that could not be read, left out."""

    tiles: list[LabelledTile]
    refs: list[TileRef]
    failures: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tiles)


def embed_tiles(tiles: Sequence[LabelledTile], encoder: LazyEncoder, cache: EmbeddingCache,
                progress: bool = True) -> EmbeddedTiles:
    """Embed every tile into ``cache`` (a cached one costs a hash); unreadable files are left out."""
    report = embed_files([t.image for t in tiles], encoder, cache, progress)
    by_source = {r.source: r for r in report.refs}
    kept = [t for t in tiles if str(t.image) in by_source]
    return EmbeddedTiles(kept, [by_source[str(t.image)] for t in kept], [str(f) for f in report.failures])


class OracleMasks(Mapping[int, np.ndarray]):
    """Tile index -> its training mask, (H, W): bool for one type, else uint8 of types 1..K (a
    box's class + 1). Each is made on first use and kept: a round of the experiment asks only
    for the tiles labelled so far."""

    def __init__(self, oracle: Oracle, tiles: Sequence[LabelledTile], types: int):
        self.oracle, self.tiles, self.types = oracle, tiles, types
        self._made: dict[int, np.ndarray] = {}

    def __getitem__(self, i: int) -> np.ndarray:
        if i not in self._made:
            self._made[i] = typed_mask(self.oracle, self.tiles[i], self.types)
        return self._made[i]

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.tiles)))

    def __len__(self) -> int:
        return len(self.tiles)


def typed_mask(oracle: Oracle, tile: LabelledTile, types: int) -> np.ndarray:
    """The oracle's mask of ``tile`` as training takes it, (H, W): bool for one type, else uint8
    types (a box whose class has no type name is refused, naming the tile)."""
    labels = oracle.labels(tile)
    if types == 1:
        return labels > 0
    if len(tile.classes) and tile.classes.max() >= types:
        raise UsageError(f"{tile.image}: a box of class {tile.classes.max()}, but data.yaml names {types} classes")
    return labels.astype(np.uint8)


def train_on_tiles(embedded: EmbeddedTiles, masks: Mapping[int, np.ndarray], chosen: Iterable[int], *, types: int,
                   encoder_id: str, cache: EmbeddingCache, recipe: TrainingRecipe, seed: int = 0,
                   progress: bool = True) -> DomainDecoder:
    """A fresh decoder trained on the ``chosen`` tiles of ``embedded`` (their (C, G, G) embeddings
    from ``cache`` under ``encoder_id``) with their ``masks``, for ``recipe.epochs`` epochs."""
    data = TrainingSet(types=types)
    for i in chosen:
        data.add(np.asarray(cache.load(embedded.refs[i].sha256, encoder_id), dtype=np.float32), masks[i])
    return train_decoder(data, epochs=recipe.epochs, seed=seed, progress=progress)
