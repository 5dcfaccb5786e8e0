"""Evaluation, in one place: the paper's pixel metrics and a geologist's object counts.

Pixel metrics pool the confusion counts over all tiles of the evaluation set.
``micro_*`` are those of the pit class on the pooled counts (the paper's "micro"
precision/recall/F1); ``macro_*`` average the pit and background classes, as
scikit-learn's ``average="macro"`` (how the Mask R-CNN comparison was scored);
``miou`` is the mean of the two classes' IoU. Object metrics count pits: each
connected component of the thresholded prediction is a detected pit, matched one to
one to expert boxes at box IoU >= 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from skimage.measure import label, regionprops

from al_loop.models.pits import MIN_COMPONENT_PX, THRESHOLD

MATCH_IOU = 0.5

# Every metric a table or a curve shows, with its display name, in table order.
METRIC_LABELS = {
    "miou": "mIoU",
    "micro_f1": "micro F1",
    "accuracy": "accuracy",
    "micro_precision": "micro precision",
    "micro_recall": "micro recall",
    "object_recall": "object recall",
    "object_precision": "object precision",
    "object_f1": "object F1",
}
TABLE = tuple(METRIC_LABELS)  # `al-loop curve`, `status` and the demo's table
FIGURE5 = ("miou", "micro_f1", "accuracy", "micro_precision", "micro_recall")  # the paper's Figure 5
HEADLINE = ("object_recall", "object_precision", "object_f1", "miou", "micro_f1")  # `simulate`'s summary
SIMULATE_FIGURE = HEADLINE[:4]  # `simulate --png`
ROUND_LINE = ("miou", "micro_f1", "object_recall")  # one line per round of the demo


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


@dataclass
class PixelCounts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        p, t = np.asarray(predicted, bool), np.asarray(truth, bool)
        if p.shape != t.shape:
            raise ValueError(f"prediction {p.shape} and truth {t.shape} differ in shape")
        tp = int(np.count_nonzero(p & t))
        fp = int(np.count_nonzero(p)) - tp
        fn = int(np.count_nonzero(t)) - tp
        self.tp += tp
        self.fp += fp
        self.fn += fn
        self.tn += p.size - tp - fp - fn

    def summary(self) -> dict[str, float]:
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        prec_fg, rec_fg = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        prec_bg, rec_bg = _ratio(tn, tn + fn), _ratio(tn, tn + fp)
        f1_fg = _ratio(2 * prec_fg * rec_fg, prec_fg + rec_fg)
        f1_bg = _ratio(2 * prec_bg * rec_bg, prec_bg + rec_bg)
        iou_fg, iou_bg = _ratio(tp, tp + fp + fn), _ratio(tn, tn + fp + fn)
        return {
            "miou": (iou_fg + iou_bg) / 2,
            "iou_pit": iou_fg,
            "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
            "micro_precision": prec_fg,
            "micro_recall": rec_fg,
            "micro_f1": f1_fg,
            "macro_precision": (prec_fg + prec_bg) / 2,
            "macro_recall": (rec_fg + rec_bg) / 2,
            "macro_f1": (f1_fg + f1_bg) / 2,
        }


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between boxes (N, 4) and (M, 4) given as x0, y0, x1, y1."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def component_boxes(mask: np.ndarray, min_pixels: int = MIN_COMPONENT_PX) -> np.ndarray:
    """Bounding boxes (x0, y0, x1, y1) of the connected components of a binary mask."""
    boxes = [
        (r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2])
        for r in regionprops(label(np.asarray(mask, bool), connectivity=2))
        if r.area >= min_pixels
    ]
    return np.asarray(boxes, dtype=float).reshape(-1, 4)


def match_boxes(predicted: np.ndarray, truth: np.ndarray, min_iou: float = MATCH_IOU) -> int:
    """Number of one-to-one matches at IoU >= ``min_iou`` (Hungarian on IoU)."""
    if len(predicted) == 0 or len(truth) == 0:
        return 0
    iou = box_iou(predicted, truth)
    rows, cols = linear_sum_assignment(-iou)
    return int(np.count_nonzero(iou[rows, cols] >= min_iou))


@dataclass
class ObjectCounts:
    matched: int = 0
    predicted: int = 0
    expert: int = 0
    min_pixels: int = MIN_COMPONENT_PX

    def add(self, predicted_mask: np.ndarray, expert_boxes: np.ndarray) -> None:
        boxes = component_boxes(predicted_mask, self.min_pixels)
        self.matched += match_boxes(boxes, expert_boxes)
        self.predicted += len(boxes)
        self.expert += len(np.asarray(expert_boxes).reshape(-1, 4))

    def summary(self) -> dict[str, float]:
        precision, recall = _ratio(self.matched, self.predicted), _ratio(self.matched, self.expert)
        return {
            "object_precision": precision,
            "object_recall": recall,
            "object_f1": _ratio(2 * precision * recall, precision + recall),
            "objects_found": self.matched,
            "objects_predicted": self.predicted,
            "objects_expert": self.expert,
        }


@dataclass
class Evaluation:
    """Accumulates pixel and object counts over an evaluation set, tile by tile."""

    pixels: PixelCounts = field(default_factory=PixelCounts)
    objects: ObjectCounts = field(default_factory=ObjectCounts)
    tiles: int = 0

    def add(
        self,
        probabilities: np.ndarray,
        truth_mask: np.ndarray,
        expert_boxes: np.ndarray,
        threshold: float = THRESHOLD,
        min_object_px: int | None = None,
    ) -> None:
        predicted = np.asarray(probabilities) >= threshold
        self.pixels.add(predicted, truth_mask)
        if min_object_px is not None:
            self.objects.min_pixels = min_object_px
        self.objects.add(predicted, expert_boxes)
        self.tiles += 1

    def summary(self) -> dict[str, float]:
        return {**self.pixels.summary(), **self.objects.summary(), "tiles": self.tiles}
