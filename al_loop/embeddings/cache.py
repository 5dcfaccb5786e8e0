"""The on-disk embedding cache: each tile is encoded once per encoder, ever.

Key = sha256 of the image file's bytes + encoder id + preprocessing version, so a
renamed or copied tile still hits and a re-exported one (new bytes) misses. Entries
are float16 ``.npy`` files written to a temporary name and renamed into place, so a
reader in another process (the ML backend next to the CLI) sees a whole entry or
none. A per-key file lock makes two processes that miss on the same tile at once
encode it once.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from al_loop.models.geometry import PREPROCESSING_VERSION


def default_cache_dir() -> Path:
    env = os.environ.get("AL_LOOP_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "al-loop" / "embeddings"


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    encodes: int = 0  # encoder passes this process ran; a tile already cached never adds one
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "encodes": self.encodes}


class EmbeddingCache:
    """Content-addressed float16 embeddings under ``root/<encoder id>/v<prep>/<ab>/<sha256>.npy``."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else default_cache_dir()
        self.stats = CacheStats()
        self._thread_locks: dict[str, threading.Lock] = {}
        self._thread_locks_guard = threading.Lock()

    def path(self, sha256: str, encoder_id: str) -> Path:
        return self.root / encoder_id / f"v{PREPROCESSING_VERSION}" / sha256[:2] / f"{sha256}.npy"

    def contains(self, sha256: str, encoder_id: str) -> bool:
        return self.path(sha256, encoder_id).is_file()

    def load(self, sha256: str, encoder_id: str, mmap: bool = True) -> np.ndarray:
        """The cached embedding; memory-mapped by default so a pool streams instead of piling up."""
        return np.load(self.path(sha256, encoder_id), mmap_mode="r" if mmap else None)

    def get_or_compute(
        self, sha256: str, encoder_id: str, compute: Callable[[], np.ndarray], mmap: bool = True
    ) -> np.ndarray:
        """The cached embedding, computing and storing it first if it is missing."""
        path = self.path(sha256, encoder_id)
        if path.is_file():
            self.stats.add(hits=1)
            return self.load(sha256, encoder_id, mmap)
        with self._key_lock(path):
            if path.is_file():  # another thread or process finished it while we waited
                self.stats.add(hits=1)
                return self.load(sha256, encoder_id, mmap)
            self.stats.add(misses=1)
            embedding = np.asarray(compute(), dtype=np.float32)
            self.stats.add(encodes=1)
            self._write(path, embedding)
        return self.load(sha256, encoder_id, mmap)

    def _write(self, path: Path, embedding: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.stem[:16] + ".", suffix=".tmp", dir=path.parent)
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
    def _key_lock(self, path: Path) -> Iterator[None]:
        # Threads of one process share a Lock (flock is per open file, not per thread);
        # processes share the lock file.
        key = str(path)
        with self._thread_locks_guard:
            thread_lock = self._thread_locks.setdefault(key, threading.Lock())
        with thread_lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock_path = path.with_suffix(".lock")
            with open(lock_path, "a+b") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock_file, fcntl.LOCK_UN)
