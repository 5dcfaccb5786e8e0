"""A decoder from labels a lab already has: a YOLO-box dataset, boxes turned into masks by an
oracle (SAM box prompts, or the ellipse proxy without weights). ``al-loop train`` runs it, so
mapping can start from an existing catalogue, without a Label Studio round. A share of the
tiles (whole groups of copies) is held back and scored, and the file keeps those figures:
a decoder says how well it fits tiles it never saw."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from al_loop.data.groups import SplitCheck, group_tiles, leakage, leaked, split_groups
from al_loop.data.radiometry import file_statistics
from al_loop.data.yolo import LabelledTile, class_names, load_split
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.errors import UsageError
from al_loop.evaluation.evaluate import evaluate_decoder
from al_loop.models.card import DecoderCard
from al_loop.models.decoder import DomainDecoder, save_decoder
from al_loop.models.encoders import LazyEncoder
from al_loop.models.pits import size_record, tile_side
from al_loop.training.fit import EmbeddedTiles, OracleMasks, TrainingRecipe, embed_tiles, train_on_tiles


@dataclass
class DatasetTraining:
    """A decoder from a YOLO data set; the recipe's fields default to the settings' defaults
    (:class:`~al_loop.training.fit.TrainingRecipe`), as ``al-loop train`` without flags."""

    dataset: Path
    encoder: str = TrainingRecipe.encoder
    oracle: str = TrainingRecipe.oracle
    splits: tuple[str, ...] = ("train",)
    model: str = TrainingRecipe.model  # SAM model of the sam oracle (and of sam-* encoders' weights)
    checkpoint: str | None = TrainingRecipe.checkpoint
    precision: str | None = TrainingRecipe.precision
    epochs: int = TrainingRecipe.epochs
    seed: int = 0
    runtime: str | None = TrainingRecipe.runtime  # SAM's image-encoder engine (None: the machine's default)
    regroup: bool = False  # leave out training tiles that have a copy in the splits not trained on
    held_out: float = 0.15  # share of the tiles (whole groups of copies) kept back to score the decoder
    binary: bool = False  # one type "pit" even when data.yaml names several

    @property
    def recipe(self) -> TrainingRecipe:
        return TrainingRecipe(self.encoder, self.model, self.checkpoint, self.precision, self.runtime, self.oracle,
                              self.epochs)

    def check(self) -> None:
        if self.epochs < 1:
            raise UsageError(f"epochs must be at least 1, not {self.epochs}")
        if not 0 <= self.held_out < 1:
            raise UsageError(f"the held-out share must be in [0, 1), not {self.held_out}")


@dataclass
class TrainingReport:
    path: Path
    encoder_id: str
    tiles: int
    boxes: int
    skipped: list[str] = field(default_factory=list)
    split: SplitCheck | None = None  # how the splits not trained on leak into the ones trained on
    dropped: int = 0  # training tiles left out for having a copy there (--regroup)
    held_out: dict | None = None  # {"tiles": [...], "metrics": {...}}: how it scores on tiles it never saw


def train_from_dataset(job: DatasetTraining, out: Path, cache: EmbeddingCache | None = None,
                       progress: bool = True) -> TrainingReport:
    """Embed every tile of the splits, mask their boxes, hold back a share of them (whole groups
    of copies), train on the rest, score on the held-back tiles, and save the decoder at ``out``
    with its card saying so."""
    job.check()
    cache, recipe = cache or EmbeddingCache(), job.recipe
    encoder = recipe.lazy_encoder()
    tiles, split_check, dropped = _training_tiles(job, progress)
    embedded = embed_tiles(tiles, encoder, cache, progress)
    names = ["pit"] if job.binary else class_names(job.dataset)
    masks = OracleMasks(recipe.build_oracle(cache), embedded.tiles, len(names))
    for i in tqdm(range(len(masks)), desc=f"{recipe.oracle} masks", unit="tile", disable=not progress):
        masks[i]  # noqa: B018 - made now, under a progress bar, rather than on first use
    fit, held = _hold_out(embedded.tiles, job, progress)
    decoder = train_on_tiles(embedded, masks, fit, types=len(names), encoder_id=encoder.id, cache=cache,
                             recipe=recipe, seed=job.seed, progress=progress)
    card = _card(job, encoder, names, embedded, masks, fit, held,
                 _held_out_metrics(decoder, embedded, masks, held, names, cache, encoder.id))
    save_decoder(decoder, out, card)
    scored = None if card.metrics is None else {"tiles": list(card.validated_on), "metrics": card.metrics}
    return TrainingReport(out, encoder.id, len(fit), int(sum(len(embedded.tiles[i].boxes) for i in fit)),
                          embedded.failures, split_check, dropped, scored)


def _held_out_metrics(decoder: DomainDecoder, embedded: EmbeddedTiles, masks: OracleMasks, held: np.ndarray,
                      names: list[str], cache: EmbeddingCache, encoder_id: str) -> dict | None:
    """The decoder's figures on the held-back tiles (None when none were held back)."""
    if not len(held):
        return None
    tiles = [embedded.tiles[i] for i in held]
    return evaluate_decoder(decoder, [embedded.refs[i] for i in held], [masks[i] for i in held], [t.boxes for t in tiles],
                    cache, encoder_id, type_names=names,
                    expert_types=None if len(names) == 1 else [t.classes + 1 for t in tiles])


def _card(job: DatasetTraining, encoder: LazyEncoder, names: list[str], embedded: EmbeddedTiles, masks: OracleMasks,
          fit: np.ndarray, held: np.ndarray, metrics: dict | None) -> DecoderCard:
    """What the decoder file says about itself: its tiles, their radiometry, pit sizes and side."""
    values = file_statistics(embedded.tiles[i].image for i in fit)
    return DecoderCard(
        encoder.id, job.encoder, job.checkpoint, encoder.precision, encoder.runtime,
        version=f"dataset-{Path(job.dataset).name}", type_names=names,
        trained_on=[str(embedded.tiles[i].image) for i in fit], validated_on=[str(embedded.tiles[i].image) for i in held],
        metrics=metrics, tiles=len(fit), epochs=job.epochs, oracle=job.oracle, dataset=str(job.dataset),
        pit_sizes=size_record([masks[i] for i in fit]), radiometry=values.to_meta() if values else None,
        tile_side=tile_side([embedded.tiles[i].size for i in fit]))


def _hold_out(tiles: list[LabelledTile], job: DatasetTraining, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) indices: ``job.held_out`` of the tiles, whole groups of near-duplicates,
    so no held-out tile has a copy in training."""
    count = int(round(job.held_out * len(tiles)))
    if count == 0:
        return np.arange(len(tiles)), np.zeros(0, int)
    if count >= len(tiles):
        raise UsageError(f"{job.dataset}: holding out {job.held_out} of its {len(tiles)} tiles leaves none to train on")
    held, fit = split_groups(group_tiles([t.image for t in tiles], progress=progress), count, job.seed)
    return fit, held


def _training_tiles(job: DatasetTraining, progress: bool) -> tuple[list[LabelledTile], SplitCheck | None, int]:
    """The tiles of the splits trained on; how the data set's other splits (those a decoder would
    be tested on) leak into them; and with ``job.regroup`` the training tiles that have a copy
    there left out, so those splits stay a fair test."""
    tiles = [tile for split in job.splits for tile in load_split(job.dataset, split)[0]]
    others = [tile for split in ("train", "valid", "test") if split not in job.splits
              and (Path(job.dataset) / split / "images").is_dir() for tile in load_split(job.dataset, split)[0]]
    if not others:
        return tiles, None, 0
    ids = np.asarray(group_tiles([t.image for t in tiles + others], progress=progress))
    copied = leaked(ids[: len(tiles)], ids[len(tiles):])
    check = SplitCheck(len(others), leakage(ids[len(tiles):], ids[: len(tiles)]), job.regroup,
                       0 if job.regroup else None)
    if job.regroup:
        tiles = [t for t, c in zip(tiles, copied, strict=False) if not c]
    return tiles, check, int(copied.sum()) if job.regroup else 0
