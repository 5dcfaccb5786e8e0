"""The embedding cache: each tile is encoded once per encoder, ever.

Key = sha256 of the image file's bytes + encoder id + preprocessing version, so a
renamed or copied tile still hits and a re-exported one (new bytes) misses. Keys fan
out on two levels of the hash (``<encoder>/v<prep>/ab/cd/<sha256>.npy``), which keeps
folders small and spreads an object store's request load over prefixes. Entries are
float16 ``.npy`` files; where they live (a local folder, ``s3://bucket/prefix``) is
:mod:`al_loop.embeddings.stores`' business, and both show a whole entry or none.

The cache heals itself: an entry whose header or size is wrong (a disk that filled up,
a copy cut short, garbage) is logged, removed and encoded again on the next request;
temporary files left by a killed writer are removed by :meth:`EmbeddingCache.clean_stale`.
"""
from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from al_loop.errors import CacheEntryError
from al_loop.models.geometry import PREPROCESSING_VERSION
from al_loop.settings import from_environment

from .stores import LocalStore, open_store

log = logging.getLogger("al_loop.cache")


def default_cache_dir() -> Path | str:
    """The cache of the setting ``cache_dir`` from ``$AL_LOOP_CACHE_DIR`` or its default: a folder
    (``~`` expanded), or a URL such as ``s3://bucket/prefix`` as it is."""
    location = from_environment("cache_dir")
    return location if "://" in location else Path(location).expanduser()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    encodes: int = 0  # encoder passes this process ran; a tile already cached never adds one
    repairs: int = 0  # damaged entries found and removed
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "encodes": self.encodes, "repairs": self.repairs}


def entry_key(sha256: str, encoder_id: str) -> str:
    return f"{encoder_id}/v{PREPROCESSING_VERSION}/{sha256[:2]}/{sha256[2:4]}/{sha256}.npy"


def _legacy_key(sha256: str, encoder_id: str) -> str:
    # Caches written before the two-level fan-out; an entry found here is moved on first use.
    return f"{encoder_id}/v{PREPROCESSING_VERSION}/{sha256[:2]}/{sha256}.npy"


def entry_problem(source: str | Path | bytes) -> str | None:
    """Why a cache entry (a file, or its bytes) is no whole embedding, None when it is one: the
    ``.npy`` header must read, describe a float16 array of three dimensions, and the entry must
    hold exactly its bytes."""
    if isinstance(source, bytes):
        return _problem(io.BytesIO(source), len(source))
    with open(source, "rb") as fh:
        return _problem(fh, os.fstat(fh.fileno()).st_size)


def _problem(fh: BinaryIO, size: int) -> str | None:
    try:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
    except (OSError, ValueError, SyntaxError) as exc:
        return f"unreadable header ({exc})"
    if dtype != np.float16 or fortran or len(shape) != 3 or min(shape) < 1:
        return f"holds a {dtype} array of shape {shape}, not a float16 embedding"
    expected = fh.tell() + int(np.prod(shape)) * 2
    return None if size == expected else f"is {size} bytes, its header says {expected} (truncated?)"


class EmbeddingCache:
    """Content-addressed float16 embeddings in a folder or at an fsspec URL (see module doc)."""

    def __init__(self, root: str | Path | None = None):
        self.store = open_store(root if root else default_cache_dir())
        self.root = self.store.root if isinstance(self.store, LocalStore) else self.store.url
        self.stats = CacheStats()

    def __reduce__(self):
        # A worker process (simulate's seeds) opens the same cache afresh: locks do not cross
        # processes, and its encode counts are its own.
        return EmbeddingCache, (self.root,)

    def path(self, sha256: str, encoder_id: str) -> Path:
        """The entry's file in a local cache (tests and tools look at it; object stores have none)."""
        return self.store.local_path(entry_key(sha256, encoder_id))

    def contains(self, sha256: str, encoder_id: str) -> bool:
        """A whole entry is there (a damaged local one is removed, and so is not). On an object
        store this is one HEAD; the bytes are checked when they are read."""
        if isinstance(self.store, LocalStore):
            return self._entry(sha256, encoder_id) is not None
        return self.store.exists(entry_key(sha256, encoder_id))

    def load(self, sha256: str, encoder_id: str, mmap: bool = True) -> np.ndarray:
        """The cached embedding; memory-mapped from a local folder by default, so a pool streams
        instead of piling up. A damaged entry is removed and raises :class:`CacheEntryError`."""
        entry = self._entry(sha256, encoder_id)
        if entry is None:
            raise CacheEntryError(
                f"no usable embedding for tile {sha256[:12]} under {encoder_id} in {self.root}: "
                "run `al-loop embed` (or the command again) to encode it"
            )
        return _array(entry, mmap)

    def get_or_compute(
        self, sha256: str, encoder_id: str, compute: Callable[[], np.ndarray], mmap: bool = True
    ) -> np.ndarray:
        """The cached embedding, computing and storing it first if it is missing or damaged."""
        entry = self._entry(sha256, encoder_id)
        if entry is None:
            with self.store.lock(sha256[:2]):
                entry = self._entry(sha256, encoder_id)  # another thread or process may have finished it
                if entry is None:
                    self.stats.add(misses=1)
                    embedding = np.asarray(compute(), dtype=np.float32)
                    self.stats.add(encodes=1)
                    written = self.put(sha256, encoder_id, embedding)
                    # A folder hands back its file (memory-mapped); an object store the bytes just
                    # sent, not a second GET of them.
                    entry = self.store.local_path(entry_key(sha256, encoder_id)) or written
                    return _array(entry, mmap)
        self.stats.add(hits=1)
        return _array(entry, mmap)

    def get_or_compute_many(self, sha256: str, encoder_ids: Sequence[str],
                            compute: Callable[[], Sequence[np.ndarray]]) -> list[np.ndarray]:
        """Entries that one computation makes together (SAM 2.1's embedding and its two high-res
        maps), each cached under its id: the first missing one computes all and stores the others."""

        def all_of(wanted: str) -> np.ndarray:
            arrays = compute()
            for encoder_id, array in zip(encoder_ids, arrays, strict=False):
                if encoder_id != wanted:  # get_or_compute stores the one it asked for
                    self.put(sha256, encoder_id, array)
            return arrays[list(encoder_ids).index(wanted)]

        return [self.get_or_compute(sha256, encoder_id, lambda e=encoder_id: all_of(e)) for encoder_id in encoder_ids]

    def put(self, sha256: str, encoder_id: str, embedding: np.ndarray) -> bytes:
        """Store an embedding (as float16), whole or not at all; returns the entry's bytes."""
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(embedding).astype(np.float16))
        self.store.write(entry_key(sha256, encoder_id), buffer.getvalue())
        return buffer.getvalue()

    def clean_stale(self) -> int:
        """Remove what killed writers left behind; returns how many files went."""
        removed = self.store.clean_stale()
        if removed:
            log.info("embedding cache %s: removed %d stale temporary or lock file(s)", self.root, removed)
        return removed

    def _entry(self, sha256: str, encoder_id: str) -> Path | bytes | None:
        """The whole entry (its local file, or its bytes from an object store), or None; a damaged
        entry is logged and removed."""
        key = entry_key(sha256, encoder_id)
        if isinstance(self.store, LocalStore):
            self._migrate(sha256, encoder_id)
            path = self.store.local_path(key)
            if not path.is_file():
                return None
            entry, problem = path, entry_problem(path)
        else:
            try:
                entry = self.store.read(key)
            except FileNotFoundError:
                return None
            problem = entry_problem(entry)
        if problem is None:
            return entry
        log.warning("embedding cache entry %s/%s %s: removed, it will be encoded again", self.root, key, problem)
        self.store.remove(key)
        self.stats.add(repairs=1)
        return None

    def _migrate(self, sha256: str, encoder_id: str) -> None:
        old = self.store.local_path(_legacy_key(sha256, encoder_id))
        if old.is_file():
            new = self.store.local_path(entry_key(sha256, encoder_id))
            new.parent.mkdir(parents=True, exist_ok=True)
            os.replace(old, new)  # atomic on one filesystem: readers see the entry in one place or the other


def _array(entry: Path | bytes, mmap: bool) -> np.ndarray:
    if isinstance(entry, Path):
        return np.load(entry, mmap_mode="r" if mmap else None)
    return np.load(io.BytesIO(entry))
