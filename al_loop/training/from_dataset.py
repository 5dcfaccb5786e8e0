"""A decoder from labels a lab already has: a YOLO-box dataset, boxes turned into masks by an
oracle (SAM box prompts, or the ellipse proxy without weights). ``al-loop train`` runs it, so
mapping can start from an existing catalogue, without a Label Studio round."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from al_loop.data.yolo import load_split
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


@dataclass
class TrainingReport:
    path: Path
    encoder_id: str
    tiles: int
    boxes: int
    skipped: list[str] = field(default_factory=list)


def train_from_dataset(job: DatasetTraining, out: Path, cache: EmbeddingCache | None = None,
                       progress: bool = True) -> TrainingReport:
    """Embed every tile of the splits, mask their boxes, train, and save the decoder at ``out``."""
    if job.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    cache = cache or EmbeddingCache()
    encoder = LazyEncoder(job.encoder, job.checkpoint if job.encoder.startswith("sam-") else None, job.precision,
                          job.runtime)
    tiles = [tile for split in job.splits for tile in load_split(job.dataset, split)[0]]
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
                          [str(f) for f in embedded.failures])
