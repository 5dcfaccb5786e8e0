"""The decoder a map is made with, and what the workspace says about the tiles it was trained on.

``--decoder PATH`` is a saved decoder (``al-loop train``, or a round's file); ``--workspace
DIR`` takes the latest decoder of an active-learning workspace and its task table: a pit
whose centre lies on a tile the expert submitted in Label Studio is ``expert`` (with that
task's id), every other pit ``predicted``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from al_loop.data.tiling import ProductEntry
from al_loop.errors import UsageError
from al_loop.loop.workspace import Workspace
from al_loop.mapping.assemble import PitPixels
from al_loop.models.decoder import DomainDecoder, load_decoder
from al_loop.models.encoders import LazyEncoder
from al_loop.training.store import DecoderStore


@dataclass
class MapModel:
    decoder: DomainDecoder
    encoder: LazyEncoder
    version: str
    tasks: dict[str, tuple[int, str]] = field(default_factory=dict)  # tile sha256 -> (task id, state)

    def review(self, pit: PitPixels, entry: ProductEntry) -> tuple[int | None, str]:
        """(Label Studio task id, review status) of the tile(s) under the pit's centre."""
        c0, r0, c1, r1 = pit.bbox
        col, row = (c0 + c1) // 2, (r0 + r1) // 2
        found = [self.tasks[t.sha256] for t in entry.tiles
                 if t.sha256 in self.tasks and t.col <= col < t.col + t.width and t.row <= row < t.row + t.height]
        labelled = [task for task, state in found if state == "labelled"]
        if labelled:
            return labelled[0], "expert"
        return (found[0][0] if found else None), "predicted"


def load_map_model(decoder_path: Path | None, workspace: Path | None) -> MapModel:
    if (decoder_path is None) == (workspace is None):
        raise UsageError("give exactly one of --decoder PATH or --workspace DIR")
    if decoder_path is not None:
        if not Path(decoder_path).is_file():
            raise UsageError(f"no decoder at {decoder_path}")
        decoder, meta = load_decoder(decoder_path)
        return MapModel(decoder, _encoder(meta), str(meta.get("version") or Path(decoder_path).stem))
    entry = DecoderStore(workspace).latest()
    if entry is None:
        raise UsageError(f"{workspace} holds no trained decoder yet: run `al-loop next-batch` first")
    decoder, meta = DecoderStore(workspace).load(entry)
    model = MapModel(decoder, _encoder({**meta, "checkpoint": entry.checkpoint, "precision": entry.precision,
                                        "encoder": entry.encoder}), entry.version)
    ws = Workspace(workspace)
    if ws.exists():
        model.tasks = {r["sha256"]: (r["task_id"], r["state"]) for r in ws.tasks() if r["sha256"]}
    return model


def _encoder(meta: dict) -> LazyEncoder:
    name = meta.get("encoder")
    if not name:
        raise UsageError("the decoder file does not say which encoder it was trained on (saved by an older al-loop?)")
    encoder = LazyEncoder(name, meta.get("checkpoint"), meta.get("precision") or "fp32")
    if encoder.id != meta["encoder_id"]:
        raise UsageError(f"the decoder was trained on embeddings of {meta['encoder_id']}, but {name} here gives "
                         f"{encoder.id}: pass the same SAM checkpoint (or retrain)")
    return encoder
