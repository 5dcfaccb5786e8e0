"""Label Studio regions <-> numpy: boxes and points in, brush masks out (and back).

Label Studio stores geometry in percent of the image and brush masks as its own RLE;
``label_studio_sdk.converter.brush`` owns that RLE, this module only calls it. Region
values are checked here, once, so a box of zero size or outside the image becomes a
clear :class:`RegionError` instead of a strange mask.
"""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field

import numpy as np
from label_studio_sdk.converter import brush
from scipy import ndimage

from al_loop.errors import RegionError
from al_loop.models.pits import THRESHOLD, most_likely_type, pit_probability
from al_loop.studio.label_config import BRUSH, KEYPOINT, RECTANGLE, Control


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    label: str

    def as_xyxy(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    positive: bool
    label: str


@dataclass
class Prompt:
    """What the expert gave SAM on one tile: at most one box, any number of +/- points."""

    box: Box | None = None
    points: list[Point] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.box.label if self.box else self.points[0].label

    def point_arrays(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        if not self.points:
            return None, None
        coords = np.array([[p.x, p.y] for p in self.points], dtype=np.float32)
        labels = np.array([1 if p.positive else 0 for p in self.points], dtype=np.int64)
        return coords, labels


MAX_REGIONS = 100  # regions per task or prompt: each box costs a SAM decoder pass


def region_value(result: dict) -> dict:
    """A region's ``value`` object; anything else (a list, a string) is a RegionError."""
    value = result.get("value")
    if not isinstance(value, dict):
        raise RegionError(f"a {result.get('type') or 'region'}'s 'value' must be an object, not {type(value).__name__}")
    return value


def _label(result: dict, key: str) -> str:
    labels = region_value(result).get(key) or []
    if not isinstance(labels, list) or not labels or not isinstance(labels[0], str):
        raise RegionError(f"a {key} region carries no label")
    return labels[0]


def check_count(regions: list, what: str, limit: int) -> None:
    """Refuse more regions than ``limit``: each one costs a decoder pass (AL_LOOP_MAX_REGIONS)."""
    if len(regions) > limit:
        raise RegionError(f"{what} holds {len(regions)} regions; the limit is {limit} (AL_LOOP_MAX_REGIONS)")


def _number(value: dict, key: str) -> float:
    number = value.get(key)
    if not isinstance(number, (int, float)) or isinstance(number, bool) or not math.isfinite(number):
        raise RegionError(f"region value {key!r} must be a finite number, not {number!r}")
    return float(number)


def result_box(result: dict, size: tuple[int, int]) -> Box:
    """A rectangle region in pixels of a (height, width) tile, clipped to the tile.

    Rotated rectangles become their axis-aligned bounds (SAM takes axis-aligned boxes).
    """
    value = region_value(result)
    x, y, w, h = (_number(value, k) for k in ("x", "y", "width", "height"))
    if w <= 0 or h <= 0:
        raise RegionError(f"box has zero or negative size (width {w:g}%, height {h:g}%)")
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    # A rotation that is not a finite number would make every corner NaN, and the clipping
    # below would turn that into a mask of the whole tile.
    angle = math.radians(_number(value, "rotation") if value.get("rotation") is not None else 0.0)
    if angle:
        # Label Studio rotates about the top-left corner.
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        corners = corners @ rot.T
    corners += (x, y)
    x0, y0 = corners.min(axis=0)
    x1, y1 = corners.max(axis=0)
    if x1 <= 0 or y1 <= 0 or x0 >= 100 or y0 >= 100:
        raise RegionError(f"box ({x:g}%, {y:g}%, {w:g}% x {h:g}%) lies outside the image")
    height, width = size
    x0, x1 = max(0.0, x0) * width / 100, min(100.0, x1) * width / 100
    y0, y1 = max(0.0, y0) * height / 100, min(100.0, y1) * height / 100
    return Box(x0, y0, x1, y1, _label(result, RECTANGLE))


def result_point(result: dict, size: tuple[int, int]) -> Point:
    """A keypoint region in pixels; ``is_positive: false`` (Alt-click in the UI) means 'not this'."""
    value = region_value(result)
    x, y = _number(value, "x"), _number(value, "y")
    if not (0 <= x <= 100 and 0 <= y <= 100):
        raise RegionError(f"point ({x:g}%, {y:g}%) lies outside the image")
    height, width = size
    positive = result.get("is_positive", True) is not False
    return Point(x * width / 100, y * height / 100, positive, _label(result, KEYPOINT))


def prompt_from_context(context: dict, size: tuple[int, int], max_regions: int = MAX_REGIONS) -> Prompt:
    """The interactive prompt Label Studio sends in ``params.context`` (its ``result`` list)."""
    results = context.get("result") if isinstance(context, dict) else None
    if not isinstance(results, list) or not results:
        raise RegionError("the context holds no regions to prompt with")
    check_count(results, "the prompt", max_regions)
    prompt = Prompt()
    for result in results:
        if not isinstance(result, dict):
            raise RegionError("a context region must be an object")
        kind = result.get("type")
        if kind == RECTANGLE:
            # The newest box wins: the UI sends all smart regions of the tile.
            prompt.box = result_box(result, size)
        elif kind == KEYPOINT:
            prompt.points.append(result_point(result, size))
    if prompt.box is None and not prompt.points:
        raise RegionError("the context holds neither a rectangle nor keypoints")
    return prompt


def boxes_in(results: list[dict], size: tuple[int, int]) -> list[Box]:
    """Every rectangle region of an annotation or prediction."""
    return [result_box(r, size) for r in results if isinstance(r, dict) and r.get("type") == RECTANGLE]


def brush_to_mask(result: dict) -> np.ndarray:
    """A brush region's mask, (height, width) bool, decoded by the SDK's converter."""
    value = region_value(result)
    rle = value.get("rle")
    width, height = result.get("original_width"), result.get("original_height")
    if value.get("format", "rle") != "rle" or not isinstance(rle, list) or not rle:
        raise RegionError("brush region holds no RLE mask")
    if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0:
        raise RegionError("brush region lacks original_width/original_height")
    try:
        flat = brush.decode_rle(rle)
    except Exception as exc:  # the SDK's decoder raises whatever a broken bit stream makes
        raise RegionError(f"brush RLE cannot be decoded: {exc}") from None
    if flat.size != width * height * 4:
        raise RegionError(f"brush RLE holds {flat.size} values, not {width}x{height}x4")
    return flat.reshape(height, width, 4)[:, :, 3] > 0


def mask_to_brush(mask: np.ndarray, control: Control, label: str, score: float | None = None) -> dict:
    """One brush region (Label Studio result item) for a (height, width) mask."""
    if label not in control.labels:
        raise RegionError(f"label {label!r} is not in {control.name!r}")
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    result = {
        "id": uuid.uuid4().hex[:10],
        "from_name": control.name,
        "to_name": control.to_name,
        "type": BRUSH,
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "value": {"format": "rle", "rle": brush.mask2rle(mask.astype(np.uint8) * 255), BRUSH: [label]},
    }
    if score is not None:
        result["score"] = float(score)
    return result


def split_objects(mask: np.ndarray, min_pixels: int = 1) -> list[np.ndarray]:
    """Connected components of a mask, largest first, dropping specks under ``min_pixels``."""
    labelled, count = ndimage.label(np.asarray(mask, dtype=bool))
    if count == 0:
        return []
    sizes = np.bincount(labelled.ravel())[1:]
    keep = [i + 1 for i in np.argsort(-sizes) if sizes[i] >= min_pixels]
    return [labelled == i for i in keep]


def annotation_labels(results: list[dict], size: tuple[int, int], type_of: dict[str, int]) -> np.ndarray:
    """An annotation's brush masks over a (height, width) tile as a uint8 map of pit types
    (``type_of``: brush control name -> {label: type number}); 0 = no pit, all 0 = 'no pit here'.
    Where masks of two types overlap, the later region wins."""
    labels = np.zeros(size, dtype=np.uint8)
    for result in results:
        if not isinstance(result, dict) or result.get("type") != BRUSH or result.get("from_name") not in type_of:
            continue
        kind = type_of[result["from_name"]].get(_label(result, BRUSH))
        if kind is None:
            raise RegionError(f"brush label {_label(result, BRUSH)!r} is not a pit type of this project")
        part = brush_to_mask(result)
        if part.shape != labels.shape:
            raise RegionError(f"brush mask is {part.shape[1]}x{part.shape[0]}, the tile {size[1]}x{size[0]}")
        labels[part] = kind
    return labels


def probability_regions(
    probs: np.ndarray, control: Control, min_pixels: int, threshold: float = THRESHOLD
) -> tuple[list[dict], float]:
    """A decoder's class probabilities ((K+1, H, W), background first; or (H, W) pit
    probabilities for one type) as brush regions, one per connected component (an expert
    reviews pits one by one), each labelled with its most likely type and scored with that
    type's mean probability over it; and the tile's mean confidence."""
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim == 2:
        probs = np.stack([1.0 - probs, probs])
    if len(probs) - 1 != len(control.labels):
        raise RegionError(f"the decoder scores {len(probs) - 1} pit type(s) but {control.name!r} has "
                          f"{len(control.labels)} label(s); retrain it on this project's labels")
    regions = []
    for obj in split_objects(pit_probability(probs) >= threshold, min_pixels):
        kind = most_likely_type(probs, obj)
        regions.append(mask_to_brush(obj, control, control.labels[kind - 1], float(probs[kind][obj].mean())))
    return regions, float(probs.max(axis=0).mean())
