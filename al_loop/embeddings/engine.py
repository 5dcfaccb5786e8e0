"""``al-loop embed`` at any scale: one :class:`TileEncoder`, run here or on a Ray cluster.

A tile's way is the same on every engine: read (a path or a URL) -> hash -> skip if the
cache holds it -> decode -> encode -> atomic put -> one status row. The local engine
feeds batches to a TileEncoder in this process; the Ray engine (``ray_engine``) gives
the same class to an actor pool, so the cluster path is not a second implementation.
Input is a list of tile sources, from folders, a tiling manifest, or a list file.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from al_loop.data.images import list_images
from al_loop.data.tiling import MANIFEST, load_manifest
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.embeddings.embed import embed_file
from al_loop.errors import CacheEntryError, ImageError, UsageError
from al_loop.models.encoders import Encoder, LazyEncoder

ROW_FIELDS = ("source", "sha256", "status", "reason", "seconds", "load_seconds")
ENCODED, CACHED, FAILED = "encoded", "cached", "failed"


@dataclass(frozen=True)
class EmbedConfig:
    """What a worker needs to build its encoder and open the cache: plain values, so that
    it travels to Ray workers as constructor arguments (a worker of a running cluster does
    not see this process's environment)."""

    encoder: str
    checkpoint: str | None = None
    precision: str = "fp32"
    cache: str | None = None  # a folder or a URL such as s3://bucket/prefix; None: the default folder
    runtime: str | None = None  # torch, openvino, onnx; None: $AL_LOOP_RUNTIME or torch (here, not on the worker)

    def build(self) -> tuple[LazyEncoder, EmbeddingCache]:
        return LazyEncoder(self.encoder, self.checkpoint, self.precision, self.runtime), EmbeddingCache(self.cache)


class TileEncoder:
    """One worker's encoder and cache; called with batches ``{"source": [...]}``, it answers
    with one status row per tile (:data:`ROW_FIELDS`). The model loads on the first miss, so
    a fully cached run never loads it."""

    def __init__(self, encoder: Encoder, cache: EmbeddingCache):
        self.encoder, self.cache = encoder, cache

    def __call__(self, batch: dict[str, Sequence]) -> dict[str, list]:
        rows = [self.encode_one(str(source)) for source in batch["source"]]
        return {name: [row[name] for row in rows] for name in ROW_FIELDS}

    def encode_one(self, source: str) -> dict:
        started, loaded_before = time.perf_counter(), getattr(self.encoder, "load_seconds", 0.0)
        try:
            ref, hit = embed_file(source, self.encoder, self.cache)
            status, sha256, reason = (CACHED if hit else ENCODED), ref.sha256, ""
        except (ImageError, CacheEntryError) as exc:  # this tile's problem; missing weights stop the run
            status, sha256, reason = FAILED, "", str(exc)
        # The model load (on the first miss) is its own phase, not this tile's time.
        load_seconds = getattr(self.encoder, "load_seconds", 0.0) - loaded_before
        return {"source": source, "sha256": sha256, "status": status, "reason": reason,
                "seconds": time.perf_counter() - started - load_seconds, "load_seconds": load_seconds}


@dataclass
class EmbedRun:
    """What a run did: one row per tile, and seconds per phase."""

    engine: str
    rows: list[dict] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # start, model load, first batch, all

    @property
    def counts(self) -> Counter:
        return Counter(row["status"] for row in self.rows)

    @property
    def failures(self) -> list[dict]:
        return [row for row in self.rows if row["status"] == FAILED]

    def rates(self) -> tuple[float, float]:
        """Encoded tiles per second: inside the encoder per worker, and end to end (wall clock)."""
        encoded, inside, wall = self.counts[ENCODED], self.phases.get("tiles", 0.0), self.phases.get("wall", 0.0)
        return (encoded / inside if inside > 0 else 0.0), (encoded / wall if wall > 0 else 0.0)

    def summary(self) -> str:
        counts, (per_worker, end_to_end) = self.counts, self.rates()
        phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.phases.items())
        return (f"{len(self.rows)} tiles on the {self.engine} engine: {counts[ENCODED]} encoded, "
                f"{counts[CACHED]} already cached, {counts[FAILED]} failed; encoded tiles/s: "
                f"{per_worker:.2f} per worker inside the encoder, {end_to_end:.2f} end to end; {phases}")


def tile_sources(inputs: Iterable[str | Path]) -> list[str]:
    """Tile paths or URLs from folders (searched recursively), tiling manifests (``manifest.json``
    or the folder holding one), list files (``.txt``, one path or URL a line), single files and URLs."""
    sources: list[str] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if "://" in text and not text.startswith("file://"):
            sources.append(text)
        elif path.name == MANIFEST or (path.is_dir() and (path / MANIFEST).is_file()):
            sources += _manifest_tiles(path if path.is_dir() else path.parent)
        elif path.is_dir():
            sources += [str(p) for p in list_images(path)]
        elif path.suffix.lower() == ".txt" and path.is_file():
            sources += [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        elif path.is_file():
            sources.append(text)
        else:
            raise UsageError(f"{text}: no such file, folder or manifest")
    return list(dict.fromkeys(sources))  # a tile named twice is encoded once


def _manifest_tiles(folder: Path) -> list[str]:
    entries = load_manifest(folder)
    return [str(folder / tile.file) for entry in entries.values() for tile in entry.tiles]


def batches(sources: Sequence[str], size: int) -> Iterator[dict[str, list[str]]]:
    for start in range(0, len(sources), size):
        yield {"source": list(sources[start:start + size])}


def run_local(sources: Sequence[str], config: EmbedConfig, batch_size: int = 8, progress: bool = True) -> EmbedRun:
    """Every tile through one TileEncoder in this process."""
    run, started = EmbedRun("local"), time.perf_counter()
    worker = TileEncoder(*config.build())
    run.phases["start"] = time.perf_counter() - started
    with tqdm(total=len(sources), desc=f"embed ({worker.encoder.id})", unit="tile", disable=not progress) as bar:
        for batch in batches(sources, batch_size):
            out = worker(batch)
            run.rows += [dict(zip(ROW_FIELDS, values, strict=False)) for values in zip(*(out[name] for name in ROW_FIELDS), strict=False)]
            bar.update(len(batch["source"]))
            bar.set_postfix(run.counts, refresh=False)
    finish_phases(run, started)
    return run


def finish_phases(run: EmbedRun, started: float) -> None:
    """Model load, tile work (summed over workers' rows) and wall time, from the rows."""
    run.phases["model load"] = sum(row["load_seconds"] for row in run.rows)
    run.phases["tiles"] = sum(row["seconds"] for row in run.rows if row["status"] == ENCODED)
    run.phases["wall"] = time.perf_counter() - started
