"""A decoder's card: what it was trained on, with what, and how it scored, as one typed record.

Every decoder file carries a card (the ``.pt`` blob, and a workspace's ``<version>.json``
beside it, readable without torch). :meth:`DecoderCard.to_record` is the one writer and
:func:`card_from_record` the one reader; files written before cards existed hold an untyped
dict of about fifteen keys, and :func:`migrate` is the one place that reads them. A record
names its ``schema``; one from a later al-loop, or a damaged one, is refused with a one-line
:class:`~al_loop.errors.UsageError` naming the file.

Torch-free: ``al-loop status`` reads cards without loading torch.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from al_loop.errors import UsageError

SCHEMA = 2  # 1: the untyped dict written before cards (no "schema" key)


def card_error(source: str | Path, reason: str) -> UsageError:
    """The one-line error of a decoder file whose card cannot be read, naming the file.
    (A class of its own belongs in al_loop/errors.py, where every user error is defined.)"""
    return UsageError(f"{source}: {reason}")


@dataclass(frozen=True)
class DecoderCard:
    """What a decoder is. ``trained_on`` and ``validated_on`` hold Label Studio task ids for a
    workspace's decoder and tile paths for one trained on a data set (``dataset`` set); ``metrics``
    is its score on the validated (held-out) tiles, None when nothing scored it."""

    encoder_id: str  # the exact encoder (weights, precision, engine): embeddings must come from it
    encoder: str | None = None  # the encoder's registry name (settings.ENCODERS)
    checkpoint: str | None = None  # SAM checkpoint of a sam-* encoder
    precision: str = "fp32"
    runtime: str | None = None  # the engine that ran the encoder (None: not recorded)
    version: str | None = None  # model_version, e.g. "round-3" or "dataset-pits"
    type_names: list[str] | None = None  # the pit types 1..K (None: "type k")
    trained_on: list[int | str] = field(default_factory=list)
    validated_on: list[int | str] = field(default_factory=list)
    metrics: dict[str, float] | None = None
    tiles: int | None = None  # training tiles
    epochs: int | None = None
    oracle: str | None = None  # how a data set's boxes became masks (box, sam)
    dataset: str | None = None  # the YOLO data set it was trained on
    pit_sizes: dict | None = None  # the training pits' areas (models.pits.size_record): map's default limits
    radiometry: dict | None = None  # the training tiles' grey values (data.radiometry): map matches products
    tile_side: int | None = None  # the training tiles' side in pixels: map tiles products alike
    created: float | None = None  # unix time it was saved
    versions: dict[str, str] = field(default_factory=dict)  # al_loop, torch, ... that wrote it
    extra: dict[str, Any] = field(default_factory=dict)  # anything else a caller recorded
    schema: int = SCHEMA

    def to_record(self) -> dict[str, Any]:
        """The card as JSON-able data (the one writer's format)."""
        return asdict(self)

    def as_dict(self) -> dict[str, Any]:
        """The card under the keys decoder files used before cards (what ``status --decoder --json``
        prints): ``evaluation`` or, for a data set's decoder, ``held_out``; ``saved_at``."""
        view = {k: v for k, v in self.to_record().items() if k not in ("metrics", "created", "extra")}
        view.update(self.extra, saved_at=self.created)
        if self.dataset is not None:
            view["held_out"] = None if self.metrics is None else {"tiles": list(self.validated_on),
                                                                  "metrics": self.metrics}
        else:
            view["evaluation"] = self.metrics
        return view

    # A read-only view of :meth:`as_dict` for code written when the card was a dict (the command
    # line's decoder summary until it reads the fields); new code reads the fields.
    def keys(self) -> list[str]:
        return list(self.as_dict())

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_dict().get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]


_FIELDS = {f.name for f in fields(DecoderCard)}


def card_from_record(record: Any, source: str | Path) -> DecoderCard:
    """The card a file holds (``source`` names the file in errors): a current record as it is, a
    record from before cards through :func:`migrate`."""
    if not isinstance(record, Mapping):
        raise card_error(source, f"its decoder card is a {type(record).__name__}, not a record; "
                                 "the file is damaged: retrain the decoder")
    schema = record.get("schema", 1)
    if schema == 1:
        return migrate(record, source)
    if schema != SCHEMA:
        raise card_error(source, f"decoder card schema {schema!r} is not one this al-loop reads "
                                 f"(1 or {SCHEMA}): it was written by another version; upgrade al-loop")
    unknown = sorted(set(record) - _FIELDS)
    if unknown or not isinstance(record.get("encoder_id"), str):
        what = f"unknown keys {unknown}" if unknown else "no encoder_id"
        raise card_error(source, f"its decoder card is damaged ({what}): retrain the decoder")
    return _built(dict(record), source)


# The keys decoder files held before cards, under the names the card gives them.
_RENAMED = {"saved_at": "created", "evaluation": "metrics"}
_DROPPED = ("file",)  # the store's pointer field, written into its sidecar; the store knows it anyway


def migrate(record: Mapping[str, Any], source: str | Path) -> DecoderCard:
    """A card from a schema-1 record: the dict ``save_decoder(..., **meta)`` wrote (with
    ``encoder_id``), or a workspace's ``<version>.json`` sidecar. ``evaluation`` and ``held_out``
    become ``metrics`` (and ``validated_on`` the held-out tiles), ``saved_at`` ``created``;
    keys the card does not know are kept in ``extra``."""
    old = dict(record)
    if not isinstance(old.get("encoder_id"), str):
        raise card_error(source, "the decoder file does not say which encoder it was trained on "
                                 "(no encoder_id): retrain the decoder")
    held = old.pop("held_out", None)
    if isinstance(held, Mapping):
        old["validated_on"], old["metrics"] = list(held.get("tiles") or []), held.get("metrics")
    for name, new in _RENAMED.items():
        if name in old:
            old[new] = old.pop(name)
    for name in _DROPPED:
        old.pop(name, None)
    old["precision"] = old.get("precision") or "fp32"
    extra = {k: old.pop(k) for k in sorted(set(old) - _FIELDS)}
    return _built({**old, "extra": {**old.get("extra", {}), **extra}, "schema": SCHEMA}, source)


def _built(values: dict[str, Any], source: str | Path) -> DecoderCard:
    for name in ("trained_on", "validated_on"):
        values[name] = list(values.get(name) or [])
    values["versions"] = dict(values.get("versions") or {})
    values["extra"] = dict(values.get("extra") or {})
    try:
        return DecoderCard(**values)
    except TypeError as exc:  # pragma: no cover - _FIELDS guards the keys
        raise card_error(source, f"its decoder card is damaged ({exc}): retrain the decoder") from None
