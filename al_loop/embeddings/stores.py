"""Where cache entries live: a local folder, or any fsspec location (``s3://bucket/prefix``).

Both keep the same keys and the same promise: a reader sees a whole entry or none.
A folder gets it from a temporary file renamed into place, an object store from a
single PUT (an S3 object appears whole or not at all). Neither needs a LIST: every
lookup is one stat/HEAD of a key computed from the tile's hash, so a resumed run over
a million tiles costs a million cheap HEADs, not a listing of the bucket.

Local folders also lock (256 stripe files, so two processes that miss on one tile
encode it once); object stores do not: two workers that race on a tile both encode
it and the last PUT wins, leaving one valid entry.
"""
from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Protocol

from al_loop.data.files import atomic_write

LOCK_DIR = ".locks"


class Store(Protocol):
    url: str

    def exists(self, key: str) -> bool: ...
    def read(self, key: str) -> bytes: ...
    def local_path(self, key: str) -> Path | None: ...
    def write(self, key: str, data: bytes) -> None: ...
    def remove(self, key: str) -> None: ...
    def lock(self, stripe: str) -> AbstractContextManager[None]: ...
    def clean_stale(self) -> int: ...


def open_store(location: str | Path) -> Store:
    """A folder for a path or ``file://`` URL, an fsspec store for any other URL (``s3://...``)."""
    text = str(location)
    if "://" not in text or text.startswith("file://"):
        return LocalStore(Path(text.removeprefix("file://")))
    return FsspecStore(text)


class LocalStore:
    """Entries as files under a folder: atomic rename, stripe locks shared across processes."""

    def __init__(self, root: Path):
        self.root = root
        self.url = str(root)
        self._stripe_locks = {f"{i:02x}": threading.Lock() for i in range(256)}

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def local_path(self, key: str) -> Path | None:
        """The file itself, so a reader can memory-map it instead of reading it whole."""
        return self.root / key

    def write(self, key: str, data: bytes) -> None:
        path = self.root / key
        # The key's file name leads the temporary name, so clean_stale knows which lock guards it.
        atomic_write(path, data, prefix=path.stem, sync=True)

    def remove(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    @contextmanager
    def lock(self, stripe: str) -> Iterator[None]:
        # Threads of one process share a Lock (flock is per open file, not per thread);
        # processes share the stripe's lock file.
        with self._stripe_locks.setdefault(stripe, threading.Lock()), self._stripe_file(stripe, blocking=True):
            yield

    def clean_stale(self) -> int:
        """Remove temporary files no writer holds (a writer killed mid-write leaves one) and the
        per-entry lock files of older versions; returns how many files went."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for tmp in self.root.rglob("*.tmp"):
            with self._stripe_file(tmp.name[:2], blocking=False) as free:
                if free:
                    tmp.unlink(missing_ok=True)
                    removed += 1
        for old_lock in self.root.glob("*/v*/??/*.lock"):
            old_lock.unlink(missing_ok=True)
            removed += 1
        return removed

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


class FsspecStore:
    """Entries as objects of an fsspec filesystem; S3 credentials and endpoint come from the
    standard AWS environment (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ...)."""

    def __init__(self, url: str):
        import fsspec  # s3fs, gcsfs, ... are optional extras

        self.url = url.rstrip("/")
        self.fs, self.prefix = fsspec.core.url_to_fs(self.url)
        self._s3 = hasattr(self.fs, "call_s3") and hasattr(self.fs, "split_path")  # s3fs
        self._stripe_locks = {f"{i:02x}": threading.Lock() for i in range(256)}

    def _path(self, key: str) -> str:
        return f"{self.prefix}/{key}"

    def exists(self, key: str) -> bool:
        path = self._path(key)
        if not self._s3:
            return self.fs.exists(path)
        # s3fs's exists() follows a missing key's HEAD with a LIST (is it a "directory"?): ask HEAD alone.
        bucket, object_key, _ = self.fs.split_path(path)
        try:
            self.fs.call_s3("head_object", Bucket=bucket, Key=object_key)
        except FileNotFoundError:
            return False
        return True

    def read(self, key: str) -> bytes:
        # s3fs's cat_file() first HEADs for the size (and LISTs when the key is missing); one GET is enough.
        return self.fs.cat_file(self._path(key), **({"max_concurrency": 1} if self._s3 else {}))

    def local_path(self, key: str) -> Path | None:
        return None

    def write(self, key: str, data: bytes) -> None:
        # One PUT: an object store shows a whole object or none (s3fs sends one put_object under 100 MB).
        self.fs.pipe_file(self._path(key), data)

    def remove(self, key: str) -> None:
        with suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))

    def lock(self, stripe: str) -> AbstractContextManager[None]:
        # Threads of this process encode a tile once; across machines, a race costs one
        # duplicate encoder pass and leaves one valid entry.
        return self._stripe_locks.setdefault(stripe, threading.Lock())

    def clean_stale(self) -> int:
        return 0  # a PUT leaves nothing behind when it fails
