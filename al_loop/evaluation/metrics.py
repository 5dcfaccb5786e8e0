"""Evaluation, in one place: the paper's pixel metrics and a geologist's object counts.

Pixel metrics pool the confusion counts over all tiles of the evaluation set.
``micro_*`` are those of the pit class on the pooled counts (the paper's "micro"
precision/recall/F1); ``macro_*`` average the pit and background classes, as
scikit-learn's ``average="macro"`` (how the Mask R-CNN comparison was scored);
``miou`` is the mean of the two classes' IoU. Object metrics count pits: each
connected component of the thresholded prediction is a detected pit, matched one to
one to expert boxes at box IoU >= 0.5.

With K pit types (:class:`TypeScores`) each pixel's predicted type is its most likely
one, and each detected pit's type the most likely over its pixels. Per type: pixel IoU
and F1 from the (K+1) x (K+1) confusion matrix; object recall and precision count a
pit as found only when it is matched *and* typed right; a pit matched but typed wrong
is counted apart (``objects_mistyped``, and ``confusion[expert>predicted]``) from a
pit that was missed. Macro averages are over the types present, micro pools the counts.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from skimage.measure import label, regionprops

from al_loop.models.pits import MIN_COMPONENT_PX, THRESHOLD, most_likely_type, pit_probability

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
# What typed rounds add, with per-type metrics named "<metric>[<type>]" (see TypeScores).
TYPED_LABELS = {
    "typed_object_recall": "typed object recall",
    "typed_object_precision": "typed object precision",
    "typed_object_recall_macro": "typed object recall (macro)",
    "type_miou": "type mIoU (macro)",
    "type_micro_f1": "type micro F1",
    "objects_mistyped": "pits found but mistyped",
}
PER_TYPE = ("object_recall", "object_precision", "iou")  # per-type lines of `curve` and tables


def per_type_key(metric: str, name: str) -> str:
    return f"{metric}[{name}]"


def type_names_in(metrics: dict) -> list[str]:
    """The type names a typed metrics dict holds, in order (none for a binary one)."""
    prefix = "object_recall["
    return [k[len(prefix):-1] for k in metrics if k.startswith(prefix) and k.endswith("]")]
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


def match_pairs(predicted: np.ndarray, truth: np.ndarray, min_iou: float = MATCH_IOU) -> list[tuple[int, int]]:
    """One-to-one matches (predicted index, truth index) at IoU >= ``min_iou`` (Hungarian on IoU)."""
    if len(predicted) == 0 or len(truth) == 0:
        return []
    iou = box_iou(predicted, truth)
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=False) if iou[r, c] >= min_iou]


def match_boxes(predicted: np.ndarray, truth: np.ndarray, min_iou: float = MATCH_IOU) -> int:
    """Number of one-to-one matches at IoU >= ``min_iou``."""
    return len(match_pairs(predicted, truth, min_iou))


def typed_components(labels: np.ndarray, probs: np.ndarray, min_pixels: int = MIN_COMPONENT_PX) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (x0, y0, x1, y1) of the pits in a predicted type map (0 = no pit) and each one's
    type: the most likely over its pixels (class probabilities ``probs`` (K+1, H, W))."""
    boxes, types = [], []
    for region in regionprops(label(np.asarray(labels) > 0, connectivity=2)):
        if region.area < min_pixels:
            continue
        boxes.append((region.bbox[1], region.bbox[0], region.bbox[3], region.bbox[2]))
        types.append(most_likely_type(probs, (region.coords[:, 0], region.coords[:, 1])))
    return np.asarray(boxes, dtype=float).reshape(-1, 4), np.asarray(types, dtype=int)


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


def labelled_objects(object_types: Sequence[np.ndarray], names: Sequence[str]) -> dict[str, float]:
    """``labelled_objects[<type>]``: the pits the expert marked, per type, from each tile's
    (N,) array of its pits' types (1..K): what ``status`` lists per type. Counted from the
    expert's regions, not from pieces of masks (a mask from a box can fall apart in pieces)."""
    counts = np.bincount(np.concatenate([np.asarray(t, dtype=int).ravel() for t in object_types] or [np.zeros(0, int)]),
                         minlength=len(names) + 1)
    return {per_type_key("labelled_objects", name): float(counts[k]) for k, name in enumerate(names, 1)}


@dataclass
class TypeScores:
    """Per-type counts: the pixel confusion matrix and typed object matches."""

    names: tuple[str, ...]
    pixels: np.ndarray = None  # (K+1, K+1): rows the expert's class, columns the prediction
    objects: np.ndarray = None  # (K+1, K+1): rows the expert's type (0: a false pit), columns the
    # predicted type (0: missed); [0, 0] unused

    def __post_init__(self) -> None:
        k = len(self.names) + 1
        self.pixels = np.zeros((k, k), dtype=np.int64) if self.pixels is None else self.pixels
        self.objects = np.zeros((k, k), dtype=np.int64) if self.objects is None else self.objects

    def add_pixels(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        k = len(self.names) + 1
        flat = np.asarray(truth, dtype=np.int64).ravel() * k + np.asarray(predicted, dtype=np.int64).ravel()
        self.pixels += np.bincount(flat, minlength=k * k).reshape(k, k)

    def add_objects(self, predicted: tuple[np.ndarray, np.ndarray], expert: tuple[np.ndarray, np.ndarray]) -> None:
        """``predicted`` and ``expert`` are (boxes (N, 4), types (N,)); matching ignores type."""
        (p_boxes, p_types), (e_boxes, e_types) = predicted, expert
        pairs = match_pairs(p_boxes, e_boxes)
        for i, j in pairs:
            self.objects[e_types[j], p_types[i]] += 1
        for j in sorted(set(range(len(e_boxes))) - {j for _, j in pairs}):
            self.objects[e_types[j], 0] += 1
        for i in sorted(set(range(len(p_boxes))) - {i for i, _ in pairs}):
            self.objects[0, p_types[i]] += 1

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        px, ob = self.pixels, self.objects
        types = range(1, len(self.names) + 1)
        for k, name in zip(types, self.names, strict=False):
            tp, truth, pred = px[k, k], px[k].sum(), px[:, k].sum()
            out[per_type_key("iou", name)] = _ratio(tp, truth + pred - tp)
            out[per_type_key("f1", name)] = _ratio(2 * tp, truth + pred)
            found, expert, predicted = ob[k, k], ob[k].sum(), ob[:, k].sum()
            recall, precision = _ratio(found, expert), _ratio(found, predicted)
            out[per_type_key("object_recall", name)] = recall
            out[per_type_key("object_precision", name)] = precision
            out[per_type_key("object_f1", name)] = _ratio(2 * precision * recall, precision + recall)
            out[f"objects_expert[{name}]"], out[f"missed[{name}]"] = float(expert), float(ob[k, 0])
            for j, other in zip(types, self.names, strict=False):
                out[f"confusion[{name}>{other}]"] = float(ob[k, j])
        present = [k for k in types if px[k].sum() + px[:, k].sum() > 0]
        out["type_miou"] = float(np.mean([out[per_type_key("iou", self.names[k - 1])] for k in present])) if present else 0.0
        diag = sum(px[k, k] for k in types)
        out["type_micro_f1"] = _ratio(2 * diag, px[1:].sum() + px[:, 1:].sum())
        found = sum(ob[k, k] for k in types)
        out["typed_object_recall"] = _ratio(found, ob[1:].sum())
        out["typed_object_precision"] = _ratio(found, ob[:, 1:].sum())
        expert_types = [k for k in types if ob[k].sum()]
        out["typed_object_recall_macro"] = (
            float(np.mean([out[per_type_key("object_recall", self.names[k - 1])] for k in expert_types])) if expert_types else 0.0)
        out["objects_mistyped"] = float(ob[1:, 1:].sum() - found)
        return out


@dataclass
class Evaluation:
    """Accumulates pixel and object counts over an evaluation set, tile by tile; with more
    than one type name, per-type counts too."""

    pixels: PixelCounts = field(default_factory=PixelCounts)
    objects: ObjectCounts = field(default_factory=ObjectCounts)
    tiles: int = 0
    types: TypeScores | None = None

    @classmethod
    def of_types(cls, names: tuple[str, ...]) -> Evaluation:
        return cls(types=TypeScores(tuple(names)) if len(names) > 1 else None)

    def add(
        self,
        probabilities: np.ndarray,
        truth: np.ndarray,
        expert_boxes: np.ndarray,
        threshold: float = THRESHOLD,
        min_object_px: int | None = None,
        expert_types: np.ndarray | None = None,
    ) -> None:
        """One tile: ``probabilities`` is (H, W) pit probability or (K+1, H, W) class
        probabilities; ``truth`` the expert's (H, W) mask (bool, or a type number per pixel);
        ``expert_types`` the type (1..K) of each expert box."""
        probabilities = np.asarray(probabilities)
        pit = probabilities if probabilities.ndim == 2 else pit_probability(probabilities)
        predicted = pit >= threshold
        truth = np.asarray(truth)
        self.pixels.add(predicted, truth > 0)
        if min_object_px is not None:
            self.objects.min_pixels = min_object_px
        self.objects.add(predicted, expert_boxes)
        if self.types is not None:
            self._add_types(probabilities, predicted, truth, expert_boxes, expert_types)
        self.tiles += 1

    def _add_types(self, probs, predicted, truth, expert_boxes, expert_types) -> None:
        if probs.ndim != 3 or len(probs) != len(self.types.names) + 1:
            raise ValueError(f"typed evaluation needs (K+1, H, W) class probabilities for {len(self.types.names)} types")
        if expert_types is None or len(expert_types) != len(np.asarray(expert_boxes).reshape(-1, 4)):
            raise ValueError("typed evaluation needs one expert type per expert box")
        labels = np.where(predicted, probs[1:].argmax(axis=0) + 1, 0)
        self.types.add_pixels(labels, truth)
        self.types.add_objects(typed_components(labels, probs, self.objects.min_pixels),
                               (np.asarray(expert_boxes, float).reshape(-1, 4), np.asarray(expert_types, int)))

    def summary(self) -> dict[str, float]:
        typed = self.types.summary() if self.types is not None else {}
        return {**self.pixels.summary(), **self.objects.summary(), "tiles": self.tiles, **typed}
