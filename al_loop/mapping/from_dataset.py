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
from al_loop.embeddings.embed import embed_files
from al_loop.errors import UsageError
from al_loop.evaluation.evaluate import evaluate
from al_loop.models.decoder import save_decoder
from al_loop.models.encoders import LazyEncoder, encoder_spec
from al_loop.models.pits import size_record, tile_side
from al_loop.training.oracle import build_oracle
from al_loop.training.train import TrainingSet, train_decoder


@dataclass
class DatasetTraining:
    dataset: Path
    encoder: str = "filterbank"
    oracle: str = "box"
    splits: tuple[str, ...] = ("train",)
    model: str = "vit_b"  # SAM model of the sam oracle (and of sam-* encoders' weights)
    checkpoint: str | None = None
    precision: str = "fp32"
    epochs: int = 100
    seed: int = 0
    runtime: str | None = None  # SAM's image-encoder engine (None: the machine's default)
    regroup: bool = False  # leave out training tiles that have a copy in the splits not trained on
    held_out: float = 0.15  # share of the tiles (whole groups of copies) kept back to score the decoder
    binary: bool = False  # one type "pit" even when data.yaml names several


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
    with those figures."""
    if job.epochs < 1 or not 0 <= job.held_out < 1:
        raise UsageError("--epochs must be at least 1 and --held-out in [0, 1)")
    cache = cache or EmbeddingCache()
    encoder = LazyEncoder(job.encoder, job.checkpoint if encoder_spec(job.encoder).sam_model else None, job.precision,
                          job.runtime)
    tiles, split_check, dropped = _training_tiles(job, progress)
    embedded = embed_files([t.image for t in tiles], encoder, cache, progress)
    by_source = {r.source: r for r in embedded.refs}
    tiles = [t for t in tiles if str(t.image) in by_source]
    oracle = build_oracle(job.oracle, job.model, job.checkpoint, cache, job.runtime)
    names = ["pit"] if job.binary else class_names(job.dataset)
    masks = [_typed(oracle.labels(t), len(names)) for t in tqdm(tiles, desc=f"{oracle.name} masks", unit="tile",
                                                                 disable=not progress)]
    fit, held = _hold_out(tiles, job, progress)
    data = TrainingSet(types=len(names))
    for i in fit:
        data.add(np.asarray(cache.load(by_source[str(tiles[i].image)].sha256, encoder.id), dtype=np.float32), masks[i])
    decoder = train_decoder(data, epochs=job.epochs, seed=job.seed, progress=progress)
    values = file_statistics(tiles[i].image for i in fit)
    radiometry = values.to_meta() if values else None
    scored = None
    if len(held):
        refs = [by_source[str(tiles[i].image)] for i in held]
        metrics = evaluate(decoder, refs, [masks[i] for i in held], [tiles[i].boxes for i in held], cache, encoder.id,
                           type_names=names, expert_types=None if len(names) == 1 else [tiles[i].classes + 1 for i in held])
        scored = {"tiles": [str(tiles[i].image) for i in held], "metrics": metrics}
    save_decoder(decoder, out, encoder.id, version=f"dataset-{Path(job.dataset).name}", encoder=job.encoder,
                 checkpoint=job.checkpoint, precision=encoder.precision, tiles=len(data), epochs=job.epochs,
                 oracle=job.oracle, dataset=str(job.dataset), type_names=names, trained_on=[str(tiles[i].image) for i in fit],
                 held_out=scored, pit_sizes=size_record([masks[i] for i in fit]), radiometry=radiometry,
                 tile_side=tile_side([tiles[i].size for i in fit]))
    return TrainingReport(out, encoder.id, len(data), int(sum(len(tiles[i].boxes) for i in fit)),
                          [str(f) for f in embedded.failures], split_check, dropped, scored)


def _typed(labels: np.ndarray, types: int) -> np.ndarray:
    """The oracle's mask as training takes it: a type number per pixel (1..K), or bool for one type."""
    return labels > 0 if types == 1 else labels.astype(np.uint8)


def _hold_out(tiles: list[LabelledTile], job: DatasetTraining, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) indices: ``job.held_out`` of the tiles, whole groups of near-duplicates,
    so no held-out tile has a copy in training."""
    count = int(round(job.held_out * len(tiles)))
    if count == 0:
        return np.arange(len(tiles)), np.zeros(0, int)
    if count >= len(tiles):
        raise UsageError(f"--held-out {job.held_out} of {len(tiles)} tiles leaves none to train on")
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
