"""A simulated expert who labels pushed tasks through the Label Studio API.

It knows the boxes a YOLO-format dataset holds for each tile (by file name) and
answers a task the way an expert would: one brush mask per pit (the ellipse
inscribed in its box, the oracle the engine's ``simulate`` uses without SAM), or an
empty annotation for a tile without pits. In a project with pit types, given the
boxes' classes, each mask carries its type (class k is the project's k+1-th type). The demo and the tests use it; a person
does the same in the UI.

A team's experts each have a habit (``habit``): one misses small pits, one draws loose
outlines, so that their agreement is something to measure.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from al_loop.data.yolo import load_split
from al_loop.studio.client import create_annotation
from al_loop.studio.fetch import task_file_path
from al_loop.studio.label_config import LabelSchema
from al_loop.studio.regions import mask_to_brush, split_objects
from al_loop.training.masks import box_labels


def dataset_boxes(root: str | Path, splits: tuple[str, ...] = ("train", "valid")) -> dict[str, np.ndarray]:
    """Expert boxes (x0, y0, x1, y1 in pixels) by image file name, over the splits present."""
    return {name: tile.boxes for name, tile in dataset_tiles(root, splits).items()}


def dataset_classes(root: str | Path, splits: tuple[str, ...] = ("train", "valid")) -> dict[str, np.ndarray]:
    """The class (0..K-1) of each of those boxes, by image file name."""
    return {name: tile.classes for name, tile in dataset_tiles(root, splits).items()}


def dataset_tiles(root: str | Path, splits: tuple[str, ...]) -> dict:
    tiles = {}
    for split in splits:
        if (Path(root) / split / "images").is_dir():
            tiles.update({tile.image.name: tile for tile in load_split(root, split)[0]})
    return tiles


def image_name(url: str) -> str:
    """The file name behind a task URL (local-files ``?d=`` paths, uploads, plain URLs)."""
    return Path(task_file_path(url)).name


# A team's habits the demo gives its simulated experts (``demo --annotators``).
MISSES_SMALL = "misses small pits"  # leaves out pits whose box's longer side is under SMALL_PIT_PX
LOOSE = "draws loose outlines"  # every outline LOOSE_PX pixels wider than the pit
SMALL_PIT_PX = 64  # about the smallest quarter of the sample tiles' pits
LOOSE_PX = 3
HABITS = (MISSES_SMALL, LOOSE)


class SimulatedExpert:
    def __init__(self, client, url: str, schema: LabelSchema, boxes: dict[str, np.ndarray],
                 classes: dict[str, np.ndarray] | None = None, habit: str | None = None):
        if habit not in (None, *HABITS):
            raise ValueError(f"unknown habit {habit!r}: one of {HABITS}")
        self.client, self.url, self.schema, self.boxes, self.habit = client, url, schema, boxes, habit
        self.classes = classes if len(schema.type_names) > 1 else None

    def answer(self, task_id: int, image_url: str, size: tuple[int, int]) -> int:
        """Submit the annotation for one task; returns its id."""
        name = image_name(image_url)
        if name not in self.boxes:
            raise KeyError(f"the simulated expert has no boxes for {name}")
        control = self.schema.mask_control
        boxes = self.boxes[name]
        types = np.ones(len(boxes), np.uint8) if self.classes is None else self.classes[name] + 1
        if self.habit == MISSES_SMALL and len(boxes):
            seen = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= SMALL_PIT_PX
            boxes, types = boxes[seen], types[seen]
        labels = box_labels(boxes, types, size)
        parts = [(kind, part) for kind in np.unique(labels[labels > 0]) for part in split_objects(labels == kind)]
        if self.habit == LOOSE:
            parts = [(kind, ndimage.binary_dilation(part, iterations=LOOSE_PX)) for kind, part in parts]
        result = [mask_to_brush(part, control, control.labels[kind - 1]) for kind, part in parts]
        return create_annotation(self.client, self.url, task_id, result)

    def skip(self, task_id: int) -> int:
        """What the Skip button does: a cancelled annotation."""
        return create_annotation(self.client, self.url, task_id, [], was_cancelled=True)
