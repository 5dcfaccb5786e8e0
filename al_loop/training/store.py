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

from al_loop.models.decoder import DomainDecoder, load_decoder, save_decoder


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
        pointer = self.dir / "latest.json"
        try:
            return DecoderVersion(**json.loads(pointer.read_text()))
        except FileNotFoundError:
            return None

    def load(self, entry: DecoderVersion) -> tuple[DomainDecoder, dict]:
        return load_decoder(self.dir / entry.file, entry.encoder_id)

    def versions(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.pt"))

    def _write_pointer(self, entry: DecoderVersion) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="latest.", suffix=".tmp", dir=self.dir)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(entry), fh)
        os.replace(tmp, self.dir / "latest.json")
