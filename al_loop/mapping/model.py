"""The decoder a map is made with, and what the expert has already said about the tiles.

``--decoder PATH`` is a saved decoder (``al-loop train``, or a round's file); ``--workspace
DIR`` takes the latest decoder of an active-learning workspace and its task table, and,
given the Label Studio token, the expert's submitted answers as they are now: on a tile the
expert submitted, the map uses the expert's mask instead of the decoder's (what was drawn or
accepted there), and a pit whose centre lies on such a tile is ``expert``, with that task's
id; every other pit is ``predicted``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from al_loop.data.images import decode_image
from al_loop.data.radiometry import Linear, MatchedEncoder, ValueStatistics, file_statistics, matching, of_decoder
from al_loop.data.tiling import ProductEntry
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.embeddings.embed import TileRef
from al_loop.errors import UsageError
from al_loop.loop.workspace import Workspace
from al_loop.models.card import DecoderCard
from al_loop.models.decoder import DomainDecoder, load_decoder
from al_loop.models.encoders import LazyEncoder
from al_loop.science.measure import PitPixels
from al_loop.settings import Settings
from al_loop.studio.answers import answers_to_masks
from al_loop.studio.client import check_project, connect
from al_loop.studio.label_config import parse_label_config
from al_loop.studio.pull import TileSource, pull_answers
from al_loop.training.masks import box_masker
from al_loop.training.store import DecoderStore


@dataclass
class MapModel:
    decoder: DomainDecoder
    encoder: LazyEncoder
    version: str
    tasks: dict[str, tuple[int, str]] = field(default_factory=dict)  # tile sha256 -> (task id, state)
    expert_masks: dict[str, np.ndarray] = field(default_factory=dict)  # tile sha256 -> the expert's (H, W) mask
    pit_sizes: dict | None = None  # the training pits' areas (models.pits.size_record): default size limits
    training_values: ValueStatistics | None = None  # the training tiles' grey values: each product is matched to them
    tile_side: int | None = None  # the training tiles' side in pixels: products are tiled alike
    type_names: list[str] | None = None  # the decoder's types, 1..K (None: "type k")

    def encoder_for(self, entry: ProductEntry, tiles_dir: Path) -> tuple[object, Linear | None]:
        """The encoder for one product's tiles, and the remap that brings them to the training
        tiles' radiometry (None: they are used as cut)."""
        if self.training_values is None:
            return self.encoder, None
        product = file_statistics(tiles_dir / t.file for t in entry.tiles)
        linear = matching(product, self.training_values) if product else None
        return (MatchedEncoder(self.encoder, linear) if linear else self.encoder), linear

    def review(self, pit: PitPixels, entry: ProductEntry) -> tuple[int | None, str]:
        """(Label Studio task id, review status) of the tile(s) under the pit's centre."""
        c0, r0, c1, r1 = pit.bbox
        col, row = (c0 + c1) // 2, (r0 + r1) // 2
        under = [t for t in entry.tiles if t.col <= col < t.col + t.width and t.row <= row < t.row + t.height]
        reviewed = [t for t in under if t.sha256 in self.expert_masks]
        if reviewed:
            return self.tasks.get(reviewed[0].sha256, (None, ""))[0], "expert"
        found = [self.tasks[t.sha256][0] for t in under if t.sha256 in self.tasks]
        return (found[0] if found else None), "predicted"


def load_map_model(decoder_path: Path | None, workspace: Path | None, token: str | None, cache: EmbeddingCache,
                   settings: Settings) -> MapModel:
    """The decoder to map with: a file, or a workspace's latest (which is always an evaluated one)."""
    if (decoder_path is None) == (workspace is None):
        raise UsageError("map with exactly one decoder: a decoder file, or a workspace's latest decoder")
    if decoder_path is not None:
        if not Path(decoder_path).is_file():
            raise UsageError(f"no decoder at {decoder_path}")
        decoder, card = load_decoder(decoder_path)
        return _map_model(decoder, card, settings.runtime, card.version or Path(decoder_path).stem)
    store = DecoderStore(workspace)
    entry = store.latest()
    if entry is None:
        unscored = f" ({len(store.versions())} trained, none scored yet: label validation tiles)" if store.versions() else ""
        raise UsageError(f"{workspace} holds no evaluated decoder{unscored}; map with one that was scored on the "
                         "validation tiles, after `al-loop next-batch` has evaluated one")
    scored = store.card(entry.version)
    if scored is None or scored.metrics is None:
        raise UsageError(f"{workspace}'s latest decoder {entry.version} has no evaluation on the validation tiles "
                         "(made before al-loop recorded one): run `al-loop next-batch` to train and score a new one, "
                         f"or map with its file {store.dir / entry.file} knowingly")
    decoder, card = store.load(entry)
    model = _map_model(decoder, card, settings.runtime, entry.version)
    ws = Workspace(workspace)
    if ws.exists():
        model.tasks = {r["sha256"]: (r["task_id"], r["state"]) for r in ws.tasks() if r["sha256"]}
        if token:
            model.expert_masks = expert_masks(ws, token, cache, settings)
    return model


def expert_masks(workspace: Workspace, token: str, cache: EmbeddingCache, settings: Settings) -> dict[str, np.ndarray]:
    """The expert's mask of every tile submitted in Label Studio now, by tile hash (the same
    answers -> masks step as ``next-batch``: brush masks, SAM masks for bare boxes)."""
    config = workspace.config()
    client = connect(config.label_studio_url, token)
    schema = parse_label_config(check_project(client, config.label_studio_url, config.project))
    answers = pull_answers(client, config.label_studio_url, config.project, schema).answers
    rows = {r["task_id"]: r for r in workspace.tasks() if r["sha256"] and r["task_id"] in answers}
    tiles = {t: TileRef(r["image"], r["sha256"], (r["height"], r["width"])) for t, r in rows.items()}
    source = TileSource(config.label_studio_url, token, config.images, settings.local_root,
                        next((r["image"] for r in rows.values()), None))
    masker, _ = box_masker(cache, lambda ref: decode_image(source.read(ref.source), ref.source), model=settings.model,
                           checkpoint=settings.checkpoint, precision=settings.precision, runtime=settings.runtime)
    masks, _ = answers_to_masks({t: answers[t] for t in tiles}, tiles, schema, masker)
    return {tiles[t].sha256: mask for t, mask in masks.items()}


def _map_model(decoder: DomainDecoder, card: DecoderCard, runtime: str | None, version: str) -> MapModel:
    return MapModel(decoder, _encoder(card, runtime), version, pit_sizes=card.pit_sizes,
                    training_values=of_decoder({"radiometry": card.radiometry}), tile_side=card.tile_side,
                    type_names=card.type_names)


def _encoder(card: DecoderCard, runtime: str | None) -> LazyEncoder:
    """The encoder the decoder's embeddings came from, run on ``runtime``; refused when this
    machine's engine gives different embeddings."""
    name = card.encoder
    if not name:
        raise UsageError("the decoder file does not say which encoder it was trained on (saved by an older al-loop?)")
    encoder = LazyEncoder(name, card.checkpoint, card.precision or "fp32", runtime)
    if encoder.id != card.encoder_id:
        raise UsageError(f"the decoder was trained on embeddings of {card.encoder_id}, but {name} here gives "
                         f"{encoder.id} ({encoder.runtime} {encoder.precision}: {encoder.engine.reason}): pass the "
                         "same SAM checkpoint, runtime and precision settings (or retrain)")
    return encoder
