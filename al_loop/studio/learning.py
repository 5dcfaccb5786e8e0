"""The one training path: answered tasks and their roles -> a decoder, scored, saved.

``al-loop next-batch`` and the backend's START_TRAINING both train here. A task whose role
is ``validation`` is never trained on; the labelled validation tasks score the decoder,
and the version is saved with the task ids it was trained on and that evaluation. A
version without an evaluation (no validation task labelled yet) is kept but does not
become the workspace's latest decoder (:meth:`DecoderStore.set_latest`), so nothing a
person is shown comes from a decoder nobody has scored.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from al_loop.data.radiometry import ValueSums
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.embeddings.embed import TileRef
from al_loop.errors import LoopError
from al_loop.evaluation.evaluate import evaluate_decoder
from al_loop.evaluation.metrics import labelled_objects
from al_loop.models.card import DecoderCard
from al_loop.models.decoder import DomainDecoder
from al_loop.models.pits import size_record, tile_side
from al_loop.studio.answers import Answer, expert_objects
from al_loop.studio.label_config import LabelSchema
from al_loop.training.store import DecoderStore, DecoderVersion
from al_loop.training.train import TrainingSet, train_decoder

VALIDATION, POOL = "validation", "pool"


@dataclass
class Labelled:
    """Answered tasks with their tiles (embeddings in the cache) and training masks, by task id."""

    answers: dict[int, Answer]
    tiles: dict[int, TileRef]
    masks: dict[int, np.ndarray]  # (H, W) uint8 of types, 0 = no pit
    values: dict[int, ValueSums] = field(default_factory=dict)  # grey-value sums of the tiles: the training radiometry


@dataclass
class Learned:
    decoder: DomainDecoder
    trained_on: list[int]
    validated_on: list[int]
    evaluation: dict[str, float] | None  # None: no labelled validation task to score on
    training_objects: dict[str, float] = field(default_factory=dict)  # labelled pits per type
    pit_sizes: dict | None = None  # the training pits' areas (models.pits.size_record): map's default limits
    radiometry: dict | None = None  # the training tiles' grey values (data.radiometry): map matches products to them
    tile_side: int | None = None  # the training tiles' side: map tiles products alike

    @property
    def metrics(self) -> dict[str, float]:
        """What a round records: the evaluation (if any) and the pits it learned from."""
        return {**(self.evaluation or {}), **self.training_objects}


def split_roles(task_ids: Sequence[int], roles: Mapping[int, str]) -> tuple[list[int], list[int]]:
    """(train, validation) task ids: only pool tasks train (a task the workspace does not know,
    new in Label Studio, is one); validation tasks score; buffer tasks (touching a validation
    tile in its product) do neither."""
    validation = sorted(t for t in task_ids if roles.get(t) == VALIDATION)
    return sorted(t for t in task_ids if roles.get(t, POOL) == POOL), validation


def learn(labelled: Labelled, roles: Mapping[int, str], schema: LabelSchema, cache: EmbeddingCache, encoder_id: str,
          *, epochs: int, seed: int = 0, progress: bool = False) -> Learned:
    """Train on the labelled pool tasks, evaluate on the labelled validation tasks."""
    train_ids, val_ids = split_roles(list(labelled.masks), roles)
    if not train_ids:
        raise LoopError(
            "no labelled training tiles yet: label the tasks of the last round in Label Studio (the validation "
            "tiles are never trained on), then run `al-loop next-batch` again"
        )
    names = schema.type_names
    data = TrainingSet(types=len(names))
    for t in train_ids:
        data.add(np.asarray(cache.load(labelled.tiles[t].sha256, encoder_id), dtype=np.float32), labelled.masks[t])
    decoder = train_decoder(data, epochs=epochs, seed=seed, progress=progress)
    marked = [expert_objects(labelled.answers[t], labelled.masks[t], schema)[1] for t in train_ids]
    values = sum((labelled.values[t] for t in train_ids if t in labelled.values), ValueSums()).statistics()
    learned = Learned(decoder, train_ids, val_ids, None, labelled_objects(marked, names),
                      size_record([labelled.masks[t] for t in train_ids]), values.to_meta() if values else None,
                      tile_side([labelled.tiles[t].size for t in train_ids]))
    if val_ids:
        objects = [expert_objects(labelled.answers[t], labelled.masks[t], schema) for t in val_ids]
        learned.evaluation = evaluate_decoder(
            decoder, [labelled.tiles[t] for t in val_ids], [labelled.masks[t] for t in val_ids], [o[0] for o in objects],
            cache, encoder_id, type_names=names, expert_types=[o[1] for o in objects])
    return learned


def save_learned(store: DecoderStore, learned: Learned, version: str, encoder: str, encoder_id: str, *,
                 checkpoint: str | None, precision: str, make_latest: bool, epochs: int | None = None,
                 type_names: list[str] | None = None, runtime: str | None = None) -> DecoderVersion:
    """Save a version with its card (what it was trained on, its evaluation); it becomes the
    latest only when asked and evaluated."""
    card = DecoderCard(encoder_id, encoder, checkpoint, precision, runtime, version=version, type_names=type_names,
                       trained_on=list(learned.trained_on), validated_on=list(learned.validated_on),
                       metrics=learned.evaluation, tiles=len(learned.trained_on), epochs=epochs,
                       pit_sizes=learned.pit_sizes, radiometry=learned.radiometry, tile_side=learned.tile_side)
    return store.save(learned.decoder, card, make_latest=make_latest)
