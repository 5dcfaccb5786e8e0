"""Writing a file whole or not at all, with the permissions the user's umask gives.

Every output (a manifest, a GeoJSON, a cache entry, a decoder's record) is written to a
temporary file beside it and renamed into place, so a reader sees the old file or the new
one, never half. ``tempfile.mkstemp`` makes its file 0600; left so, a manifest or a map on a
shared server is unreadable to colleagues: the file gets 0666 less the umask, as ``open``
would have given it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Read once, at import: reading the umask means setting it, which is not safe across threads.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: str | Path, data: bytes, prefix: str | None = None, sync: bool = False) -> None:
    """Write ``data`` to ``path`` whole (temporary file named ``prefix`` + random, then a rename);
    ``sync`` flushes it to the disk first (the embedding cache: an entry must survive a crash)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=(prefix or path.name) + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_UMASK)
            fh.write(data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
