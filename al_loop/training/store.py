"""A workspace's trained decoders, one file per version, and a pointer to the latest.

``al-loop next-batch`` saves ``round-N``; the backend's START_TRAINING saves
``backend-N``. The pointer ``latest.json`` is replaced atomically, so the backend
(another process) always reads a whole decoder and picks a new one up by its
version, which is also the ``model_version`` Label Studio shows.

Every version carries its card (:mod:`al_loop.models.card`): the task ids it was trained on
and its evaluation on the validation tiles, in the weights and in ``<version>.json`` beside
them (readable without torch). Only
an evaluated version may become the latest, the one pre-annotations and ``map
--workspace`` use: a decoder nobody has scored is kept but never shown as the model.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from al_loop.data.files import atomic_write
from al_loop.errors import UsageError, WorkspaceError
from al_loop.models.card import DecoderCard, card_from_record
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

    def save(self, decoder: DomainDecoder, card: DecoderCard, make_latest: bool = True) -> DecoderVersion:
        """Write version ``card.version`` with its card (what it was trained on, and its score: None
        when not evaluated) in the weights and in ``<version>.json`` beside them; ``make_latest=False``
        keeps it from the backend until :meth:`set_latest` (a round's decoder goes live only once
        its batch is pushed)."""
        version = card.version
        if not version or Path(version).name != version:
            raise ValueError(f"a stored decoder needs a plain version name, not {version!r}")  # a programming error
        entry = DecoderVersion(version, f"{version}.pt", card.encoder or "", card.encoder_id, card.checkpoint,
                               card.precision)
        card = replace(card, trained_on=sorted(card.trained_on), validated_on=sorted(card.validated_on),
                       created=card.created if card.created is not None else time.time())
        save_decoder(decoder, self.dir / entry.file, card)
        _write_json(self.dir / f"{version}.json", card.to_record())
        if make_latest:
            self.set_latest(entry)
        return entry

    def set_latest(self, entry: DecoderVersion) -> bool:
        """Make ``entry`` the decoder in use, if it was evaluated; False (and nothing changes) if not."""
        card = self.card(entry.version)
        if card is None or card.metrics is None:
            return False
        self._write_pointer(entry)
        return True

    def card(self, version: str) -> DecoderCard | None:
        """A version's card, read without torch (None for versions saved before it was kept, or whose
        sidecar is unreadable: the weights still hold it)."""
        path = self.dir / f"{version}.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        try:
            return card_from_record(record, path)
        except UsageError:  # damaged, or from a later al-loop: the weights' own card is what loads
            return None

    def records(self) -> list[dict]:
        """Every version's record, oldest first, with ``latest`` marking the one in use."""
        try:
            latest = self.latest()
        except WorkspaceError:
            latest = None
        rows = []
        for v in self.versions():
            card = self.card(v)
            # "version" last: a sidecar's own version field cannot rename the file it sits beside
            rows.append({"trained_on": None, "evaluation": None, **(card.as_dict() if card else {}),
                         "version": v, "file": f"{v}.pt"})
        for row in rows:
            row["latest"] = latest is not None and row["version"] == latest.version
        return sorted(rows, key=lambda r: (r.get("saved_at") or 0, r["version"]))

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

    def load(self, entry: DecoderVersion) -> tuple[DomainDecoder, DecoderCard]:
        """The decoder and its card; a missing or damaged file is a WorkspaceError."""
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
        _write_json(self.dir / "latest.json", asdict(entry))


def _write_json(path: Path, data: dict) -> None:
    """Replace ``path`` atomically: another process reads the old file or the new, never half."""
    atomic_write(path, json.dumps(data).encode(), prefix=path.stem)
