"""A decoder from labels a lab already has: a YOLO-box dataset, boxes turned into masks by an
oracle (SAM box prompts, or the ellipse proxy without weights). ``al-loop train`` runs it, so
mapping can start from an existing catalogue, without a Label Studio round."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from al_loop.data.groups import SplitCheck, group_tiles, leakage, leaked
from al_loop.data.yolo import LabelledTile, load_split
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.embeddings.embed import embed_files
from al_loop.errors import UsageError
from al_loop.models.decoder import save_decoder
from al_loop.models.encoders import LazyEncoder
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


@dataclass
class TrainingReport:
    path: Path
    encoder_id: str
    tiles: int
    boxes: int
    skipped: list[str] = field(default_factory=list)
    split: SplitCheck | None = None  # how the splits not trained on leak into the ones trained on
    dropped: int = 0  # training tiles left out for having a copy there (--regroup)


def train_from_dataset(job: DatasetTraining, out: Path, cache: EmbeddingCache | None = None,
                       progress: bool = True) -> TrainingReport:
    """Embed every tile of the splits, mask their boxes, train, and save the decoder at ``out``."""
    if job.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    cache = cache or EmbeddingCache()
    encoder = LazyEncoder(job.encoder, job.checkpoint if job.encoder.startswith("sam-") else None, job.precision,
                          job.runtime)
    tiles, split_check, dropped = _training_tiles(job, progress)
    embedded = embed_files([t.image for t in tiles], encoder, cache, progress)
    by_source = {r.source: r for r in embedded.refs}
    oracle = build_oracle(job.oracle, job.model, job.checkpoint, cache, job.runtime)
    data = TrainingSet()
    for tile in tqdm(tiles, desc=f"{oracle.name} masks", unit="tile", disable=not progress):
        ref = by_source.get(str(tile.image))
        if ref is not None:
            data.add(np.asarray(cache.load(ref.sha256, encoder.id), dtype=np.float32), oracle.labels(tile) > 0)
    decoder = train_decoder(data, epochs=job.epochs, seed=job.seed, progress=progress)
    version = f"dataset-{Path(job.dataset).name}"
    save_decoder(decoder, out, encoder.id, version=version, encoder=job.encoder, checkpoint=job.checkpoint,
                 precision=job.precision, tiles=len(data), oracle=job.oracle, dataset=str(job.dataset))
    return TrainingReport(out, encoder.id, len(data), int(sum(len(t.boxes) for t in tiles)),
                          [str(f) for f in embedded.failures], split_check, dropped)


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
        tiles = [t for t, c in zip(tiles, copied) if not c]
    return tiles, check, int(copied.sum()) if job.regroup else 0
