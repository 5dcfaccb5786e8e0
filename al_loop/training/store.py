"""A workspace's trained decoders, one file per version, and a pointer to the latest.

``al-loop next-batch`` saves ``round-N``; the backend's START_TRAINING saves
``backend-N``. The pointer ``latest.json`` is replaced atomically, so the backend
(another process) always reads a whole decoder and picks a new one up by its
version, which is also the ``model_version`` Label Studio shows.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from al_loop.errors import UsageError, WorkspaceError
from al_loop.models.decoder import DomainDecoder, load_decoder, save_decoder

REPAIR = "the next training run (START_TRAINING or `al-loop next-batch`) writes a new one"


@dataclass(frozen=True)
class DecoderVersion:
    version: str  # model_version, e.g. "round-3"
    file: str  # relative to the store
    encoder: str  # registry name of the encoder its embeddings come from
    encoder_id: str  # the exact encoder (weights, precision)
    checkpoint: str | None = None  # SAM checkpoint of a sam-* encoder
    precision: str = "fp32"


class DecoderStore:
    def __init__(self, workspace: str | Path):
        self.dir = Path(workspace) / "decoders"

    def save(
        self,
        decoder: DomainDecoder,
        version: str,
        encoder: str,
        encoder_id: str,
        checkpoint: str | None = None,
        precision: str = "fp32",
        make_latest: bool = True,
        **meta,
    ) -> DecoderVersion:
        """Write a version; ``make_latest=False`` keeps it from the backend until :meth:`set_latest`
        (a round's decoder goes live only once its batch is pushed)."""
        entry = DecoderVersion(version, f"{version}.pt", encoder, encoder_id, checkpoint, precision)
        save_decoder(decoder, self.dir / entry.file, encoder_id, version=version, encoder=encoder, **meta)
        if make_latest:
            self.set_latest(entry)
        return entry

    def set_latest(self, entry: DecoderVersion) -> None:
        self._write_pointer(entry)

    def latest(self) -> DecoderVersion | None:
        """The decoder in use, None before the first; a damaged pointer is a WorkspaceError."""
        pointer = self.dir / "latest.json"
        try:
            fields = json.loads(pointer.read_text())
            entry = DecoderVersion(**fields)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:  # truncated, garbage, or fields missing
            raise WorkspaceError(f"{pointer} is damaged ({type(exc).__name__}: {exc}); {REPAIR}") from None
        if not all(isinstance(v, str) for v in (entry.version, entry.file, entry.encoder_id)) or Path(entry.file).name != entry.file:
            raise WorkspaceError(f"{pointer} is damaged (it does not name a decoder file of {self.dir}); {REPAIR}")
        return entry

    def load(self, entry: DecoderVersion) -> tuple[DomainDecoder, dict]:
        """The decoder and its metadata; a missing or damaged file is a WorkspaceError."""
        path = self.dir / entry.file
        try:
            return load_decoder(path, entry.encoder_id)
        except UsageError:
            raise
        except Exception as exc:  # torch.load raises many kinds on a truncated or foreign file
            raise WorkspaceError(f"decoder {path} cannot be loaded ({type(exc).__name__}: {exc}); {REPAIR}") from None

    def problem(self) -> str | None:
        """What is wrong with the decoder in use (None when it loads, or when there is none yet)."""
        try:
            entry = self.latest()
            if entry is not None:
                self.load(entry)
        except (WorkspaceError, UsageError) as exc:
            return str(exc)
        return None

    def versions(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.pt"))

    def _write_pointer(self, entry: DecoderVersion) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="latest.", suffix=".tmp", dir=self.dir)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(entry), fh)
        os.replace(tmp, self.dir / "latest.json")
