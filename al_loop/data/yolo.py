"""YOLO-format datasets (DeepLandforms, the HiRISE pits set): tiles with expert boxes.

Layout: ``data.yaml``, ``<split>/images``, ``<split>/labels``; a label line is
``class cx cy w h`` normalised by the tile size. Real files have quirks: no final
newline, blank lines, boxes under a pixel wide. Boxes smaller than a pixel are not
something an expert can have meant as a pit outline; they are dropped and counted.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from al_loop.data.images import IMAGE_SUFFIXES
from al_loop.errors import DatasetError, ImageError

MIN_BOX_PX = 1.0


@dataclass(frozen=True)
class LabelledTile:
    image: Path
    size: tuple[int, int]  # (height, width)
    boxes: np.ndarray  # (N, 4) x0, y0, x1, y1 in pixels
    classes: np.ndarray  # (N,) int


@dataclass
class SplitReport:
    tiles: int = 0
    boxes: int = 0
    dropped_boxes: int = 0  # under MIN_BOX_PX wide or high
    unreadable: list[str] = field(default_factory=list)


def read_data_yaml(root: Path) -> dict:
    """A dataset's ``data.yaml``; ``root`` is the dataset folder or the YAML file itself."""
    path = root if root.suffix in (".yaml", ".yml") else root / "data.yaml"
    if not path.is_file():
        raise DatasetError(f"{root} is not a YOLO dataset: no data.yaml")
    try:
        meta = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DatasetError(f"{path} is not valid YAML: {exc}") from None
    if meta is not None and not isinstance(meta, dict):
        raise DatasetError(f"{path} must hold a mapping (names:, nc:, ...)")
    return meta or {}


def class_names(root: str | Path) -> list[str]:
    """The class names of a dataset's ``data.yaml`` (``names`` as a list or an index mapping),
    checked against ``nc`` when it is given; a bare number ``n`` reads "type n" (the HiRISE
    set names its classes 1..5, which would make poor labels)."""
    meta = read_data_yaml(Path(root))
    names = meta.get("names")
    if isinstance(names, dict):
        try:
            names = [names[k] for k in sorted(names, key=int)]
        except (TypeError, ValueError):
            raise DatasetError(f"{root}/data.yaml: 'names' keys must be class numbers") from None
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{root}/data.yaml names no classes ('names: [...]')")
    names = [f"type {n}" if str(n).strip().isdigit() else str(n).strip() for n in names]
    if "nc" in meta and meta["nc"] != len(names):
        raise DatasetError(f"{root}/data.yaml: nc is {meta['nc']} but {len(names)} names are given")
    if len(set(names)) != len(names) or not all(names):
        raise DatasetError(f"{root}/data.yaml: class names must be distinct and not empty, got {names}")
    return names


def class_descriptions(root: str | Path) -> list[str] | None:
    """One line per class from ``data.yaml``'s ``descriptions`` (our addition; YOLO tools ignore
    it): what the expert sees on hovering over a type. None when the file has none."""
    meta = read_data_yaml(Path(root))
    descriptions = meta.get("descriptions")
    if descriptions is None:
        return None
    names = class_names(root)
    if not isinstance(descriptions, list) or len(descriptions) != len(names):
        raise DatasetError(f"{root}/data.yaml: 'descriptions' must be a list of {len(names)} lines, one per class")
    return [str(d).strip() for d in descriptions]


def parse_label_rows(text: str, source: str = "<labels>") -> np.ndarray:
    """The label lines as rows (class, cx, cy, w, h), normalised as written."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise DatasetError(f"{source}:{lineno}: expected 'class cx cy w h', got {line.strip()!r}")
        try:
            values = [float(v) for v in parts]
        except ValueError:
            raise DatasetError(f"{source}:{lineno}: not numbers: {line.strip()!r}") from None
        if not all(np.isfinite(values)) or values[0] < 0 or values[0] != int(values[0]):
            raise DatasetError(f"{source}:{lineno}: the class must be a whole number >= 0 and all values finite: "
                               f"{line.strip()!r}")
        rows.append(values)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def parse_labels(text: str, size: tuple[int, int], source: str = "<labels>") -> tuple[np.ndarray, np.ndarray, int]:
    """Boxes in pixels, classes, and the number of sub-pixel boxes dropped."""
    h, w = size
    boxes, classes, dropped = [], [], 0
    for cls, cx, cy, bw, bh in parse_label_rows(text, source):
        x0, x1 = np.clip([(cx - bw / 2) * w, (cx + bw / 2) * w], 0, w)
        y0, y1 = np.clip([(cy - bh / 2) * h, (cy + bh / 2) * h], 0, h)
        if x1 - x0 < MIN_BOX_PX or y1 - y0 < MIN_BOX_PX:
            dropped += 1
            continue
        boxes.append((x0, y0, x1, y1))
        classes.append(int(cls))
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(classes, dtype=int), dropped


def load_split(root: str | Path, split: str) -> tuple[list[LabelledTile], SplitReport]:
    """The tiles of one split (``train``, ``valid``, ``test``) with their expert boxes."""
    root = Path(root)
    read_data_yaml(root)
    images_dir = root / split / "images"
    if not images_dir.is_dir():
        raise DatasetError(f"{root}: no {split}/images directory")
    labels_dir = root / split / "labels"
    report = SplitReport()
    tiles = []
    for image in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            with Image.open(image) as im:  # header only: sizes without decoding
                size = (im.height, im.width)
        except (OSError, ValueError) as exc:
            report.unreadable.append(str(ImageError(image, f"unreadable ({exc})")))
            continue
        label_file = labels_dir / (image.stem + ".txt")
        text = label_file.read_text() if label_file.is_file() else ""  # no file: a tile without pits
        boxes, classes, dropped = parse_labels(text, size, str(label_file))
        tiles.append(LabelledTile(image, size, boxes, classes))
        report.tiles += 1
        report.boxes += len(boxes)
        report.dropped_boxes += dropped
    if not tiles:
        raise DatasetError(f"{images_dir} holds no readable images")
    return tiles, report
