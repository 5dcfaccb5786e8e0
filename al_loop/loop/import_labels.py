"""``al-loop init --labels DIR``: a lab's existing catalogue, as typed annotations.

The labels are YOLO files as the HiRISE pits set ships them: ``STEM.txt`` for the tile
image ``STEM.*``, one ``class cx cy w h`` line per pit, normalised to the tile. Each
file becomes one annotation of the matching task, a typed box per line (class k is the
project's (k+1)-th pit type; in a one-type project every class is "pit"); an empty file
is an answer too: "no pit here". ``next-batch`` turns the boxes into SAM masks as it does
for any box drawn without a mask, so the first round already trains: round 1, not 0.
Every file is read and checked before Label Studio is touched.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from al_loop.data.images import image_size
from al_loop.data.yolo import MIN_BOX_PX, parse_label_rows
from al_loop.errors import DatasetError, ImageError, LoopError
from al_loop.studio.client import create_annotation
from al_loop.studio.fetch import task_file_path
from al_loop.studio.label_config import RECTANGLE, LabelSchema


@dataclass
class ImportReport:
    annotations: int = 0
    boxes: dict[str, int] = field(default_factory=dict)  # per pit type
    unmatched: list[str] = field(default_factory=list)  # label files no task's image is named after


def read_label_dir(directory: Path) -> dict[str, np.ndarray]:
    """Rows (class, cx, cy, w, h) of every ``*.txt`` in ``directory``, by file stem."""
    if not directory.is_dir():
        raise LoopError(f"{directory}: not a folder of labels", param="labels")
    files = sorted(directory.glob("*.txt"))
    if not files:
        raise LoopError(f"{directory} holds no YOLO label files (STEM.txt)", param="labels")
    try:
        return {f.stem: parse_label_rows(f.read_text(), str(f)) for f in files}
    except (DatasetError, UnicodeDecodeError, OSError) as exc:
        raise LoopError(f"the labels: {exc}", param="labels") from None


def check_classes(labels: dict[str, np.ndarray], schema: LabelSchema) -> None:
    """Every class must name one of the project's types (any class is "pit" in a one-type project)."""
    types = schema.type_names
    if not schema.of_kind(RECTANGLE):
        raise LoopError("the labelling config has no <RectangleLabels> to import boxes into")
    if len(types) == 1:
        return
    worst = max((int(rows[:, 0].max()) for rows in labels.values() if len(rows)), default=0)
    if worst >= len(types):
        raise LoopError(f"the labels hold class {worst}, but the project has {len(types)} pit types "
                        f"({', '.join(types)}); class k is type k+1", param="labels")


def box_regions(rows: np.ndarray, schema: LabelSchema, size: tuple[int, int] | None = None) -> list[dict]:
    """Typed rectangle regions (Label Studio percent) for normalised YOLO rows. Boxes under
    a pixel of a (height, width) ``size`` are left out, as the dataset loader does (no
    expert meant one as a pit outline); so are boxes that clip to nothing."""
    control, types = schema.of_kind(RECTANGLE)[0], schema.type_names
    min_w, min_h = (MIN_BOX_PX / size[1], MIN_BOX_PX / size[0]) if size else (0.0, 0.0)
    regions = []
    for cls, cx, cy, w, h in rows:
        x0, x1 = np.clip([cx - w / 2, cx + w / 2], 0, 1)
        y0, y1 = np.clip([cy - h / 2, cy + h / 2], 0, 1)
        if x1 - x0 <= min_w or y1 - y0 <= min_h or x1 <= x0 or y1 <= y0:
            continue
        x0, x1, y0, y1 = x0 * 100, x1 * 100, y0 * 100, y1 * 100
        label = types[0] if len(types) == 1 else types[int(cls)]
        regions.append({
            "id": uuid.uuid4().hex[:10], "from_name": control.name, "to_name": control.to_name, "type": RECTANGLE,
            "value": {"x": float(x0), "y": float(y0), "width": float(x1 - x0), "height": float(y1 - y0),
                      "rotation": 0, RECTANGLE: [label]},
        })
    return regions


def import_labels(
    client, url: str, tasks: list[dict], schema: LabelSchema, labels: dict[str, np.ndarray], images: Path | None = None,
) -> ImportReport:
    """One annotation per task whose image has a label file; what was imported, per type.
    ``images``: the tiles' folder, where their sizes can be read (else no sub-pixel check)."""
    report = ImportReport(boxes={name: 0 for name in schema.type_names})
    matched = set()
    for task in tqdm(tasks, desc="import labels", unit="task", leave=False):
        name = Path(task_file_path(str((task.get("data") or {}).get(schema.image_key, "")))).name
        stem = Path(name).stem
        if stem not in labels:
            continue
        regions = box_regions(labels[stem], schema, _size(images / name) if images else None)
        create_annotation(client, url, int(task["id"]), regions)
        matched.add(stem)
        report.annotations += 1
        for region in regions:
            report.boxes[region["value"][RECTANGLE][0]] += 1
    report.unmatched = sorted(set(labels) - matched)
    return report


def _size(path: Path) -> tuple[int, int] | None:
    try:
        return image_size(path.read_bytes(), path)
    except (OSError, ImageError):
        return None
