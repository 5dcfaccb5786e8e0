"""The on-disk embedding cache: each tile is encoded once per encoder, ever.

Key = sha256 of the image file's bytes + encoder id + preprocessing version, so a
renamed or copied tile still hits and a re-exported one (new bytes) misses. Entries
are float16 ``.npy`` files written to a temporary name and renamed into place, so a
reader in another process (the ML backend next to the CLI) sees a whole entry or
none. File locks make two processes that miss on the same tile at once encode it once.

The cache heals itself: an entry whose header or size is wrong (a disk that filled up,
a copy cut short, garbage) is logged, removed and encoded again on the next request;
temporary files left by a killed writer are removed at start. Locks are 256 stripes
by key prefix, so they never accumulate one file per entry.
"""
from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from al_loop.errors import CacheEntryError
from al_loop.models.geometry import PREPROCESSING_VERSION

log = logging.getLogger("al_loop.cache")
LOCK_DIR = ".locks"


def default_cache_dir() -> Path:
    env = os.environ.get("AL_LOOP_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "al-loop" / "embeddings"


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


def entry_problem(path: Path) -> str | None:
    """Why a cache file is no whole embedding (None when it is one): the ``.npy`` header must
    read, describe a float16 array of three dimensions, and the file must hold exactly its bytes."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(fh)
            data_start = fh.tell()
    except (OSError, ValueError, SyntaxError) as exc:
        return f"unreadable header ({exc})"
    if dtype != np.float16 or fortran or len(shape) != 3 or min(shape) < 1:
        return f"holds a {dtype} array of shape {shape}, not a float16 embedding"
    expected = data_start + int(np.prod(shape)) * 2
    size = path.stat().st_size
    return None if size == expected else f"is {size} bytes, its header says {expected} (truncated?)"


class EmbeddingCache:
    """Content-addressed float16 embeddings under ``root/<encoder id>/v<prep>/<ab>/<sha256>.npy``."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else default_cache_dir()
        self.stats = CacheStats()
        self._stripe_locks = {f"{i:02x}": threading.Lock() for i in range(256)}

    def path(self, sha256: str, encoder_id: str) -> Path:
        return self.root / encoder_id / f"v{PREPROCESSING_VERSION}" / sha256[:2] / f"{sha256}.npy"

    def contains(self, sha256: str, encoder_id: str) -> bool:
        """A whole entry is there; a damaged one is removed (and so is not there)."""
        return self._usable(self.path(sha256, encoder_id))

    def load(self, sha256: str, encoder_id: str, mmap: bool = True) -> np.ndarray:
        """The cached embedding; memory-mapped by default so a pool streams instead of piling up.
        A damaged entry is removed and raises :class:`CacheEntryError`."""
        path = self.path(sha256, encoder_id)
        if not self._usable(path):
            raise CacheEntryError(
                f"no usable embedding for tile {sha256[:12]} under {encoder_id} in {self.root}: "
                "run `al-loop embed` (or the command again) to encode it"
            )
        return np.load(path, mmap_mode="r" if mmap else None)

    def get_or_compute(
        self, sha256: str, encoder_id: str, compute: Callable[[], np.ndarray], mmap: bool = True
    ) -> np.ndarray:
        """The cached embedding, computing and storing it first if it is missing or damaged."""
        path = self.path(sha256, encoder_id)
        if self._usable(path):
            self.stats.add(hits=1)
            return self.load(sha256, encoder_id, mmap)
        with self._key_lock(sha256):
            if self._usable(path):  # another thread or process finished it while we waited
                self.stats.add(hits=1)
                return self.load(sha256, encoder_id, mmap)
            self.stats.add(misses=1)
            embedding = np.asarray(compute(), dtype=np.float32)
            self.stats.add(encodes=1)
            self._write(path, embedding)
        return self.load(sha256, encoder_id, mmap)

    def clean_stale(self) -> int:
        """Remove temporary files no writer holds (a writer killed mid-write leaves one) and the
        per-entry lock files of older versions; returns how many files went."""
        removed = 0
        for tmp in self.root.rglob("*.tmp") if self.root.is_dir() else ():
            with self._stripe_file(tmp.name[:2], blocking=False) as free:
                if free:
                    tmp.unlink(missing_ok=True)
                    removed += 1
        for old_lock in self.root.glob("*/v*/??/*.lock") if self.root.is_dir() else ():
            old_lock.unlink(missing_ok=True)
            removed += 1
        if removed:
            log.info("embedding cache %s: removed %d stale temporary or lock file(s)", self.root, removed)
        return removed

    def _usable(self, path: Path) -> bool:
        if not path.is_file():
            return False
        problem = entry_problem(path)
        if problem is None:
            return True
        log.warning("embedding cache entry %s %s: removed, it will be encoded again", path, problem)
        path.unlink(missing_ok=True)
        self.stats.add(repairs=1)
        return False

    def _write(self, path: Path, embedding: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The full key leads the temporary name, so clean_stale knows which lock guards it.
        fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, embedding.astype(np.float16))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @contextmanager
    def _key_lock(self, sha256: str) -> Iterator[None]:
        # Threads of one process share a Lock (flock is per open file, not per thread);
        # processes share the stripe's lock file.
        stripe = sha256[:2]
        with self._stripe_locks.setdefault(stripe, threading.Lock()):
            with self._stripe_file(stripe, blocking=True):
                yield

    @contextmanager
    def _stripe_file(self, stripe: str, blocking: bool) -> Iterator[bool]:
        """Hold the stripe's file lock; yields False when ``blocking`` is off and another holds it."""
        lock_dir = self.root / LOCK_DIR
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f"{stripe}.lock", "a+b") as lock_file:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)
