"""The loop's evaluation on plain arrays: predicted and expert masks in, the figures ``next-batch``,
``simulate`` and ``train`` report out, with no decoder, cache or workspace (the public
``al_loop.evaluate``). Torch-free."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from al_loop.evaluation.metrics import Evaluation, component_boxes


def evaluate(pred_masks: np.ndarray, true_masks: np.ndarray, true_boxes: Sequence[np.ndarray] | None = None,
             threshold: float = 0.5) -> dict[str, float]:
    """The loop's metrics for N tiles.

    Args:
        pred_masks: (N, H, W) predicted pit masks, bool, or pit probabilities in [0, 1] (a pixel is
            a pit at ``threshold`` and above).
        true_masks: (N, H, W) the expert's masks (bool, or a type number per pixel: > 0 is pit).
        true_boxes: per tile, the expert's (M, 4) boxes (x0, y0, x1, y1, pixels) that object recall
            and precision match detected pits to (box IoU >= 0.5); default: the bounding boxes of
            the connected components of ``true_masks``.
        threshold: the pit probability at which a pixel counts as pit.

    Returns:
        ``miou`` (mean of the pit and background IoU), ``iou_pit``, ``micro_precision``,
        ``micro_recall``, ``micro_f1``, ``accuracy``, the ``macro_*`` averages, ``object_recall``,
        ``object_precision``, ``object_f1`` and ``tiles``, pooled over the tiles as the loop does.
    """
    pred, truth = np.asarray(pred_masks), np.asarray(true_masks)
    if pred.ndim != 3 or pred.shape != truth.shape:
        raise ValueError(f"pred_masks and true_masks must both be (N, H, W), got {pred.shape} and {truth.shape}")
    if true_boxes is not None and len(true_boxes) != len(truth):
        raise ValueError(f"true_boxes has {len(true_boxes)} entries for {len(truth)} tiles")
    evaluation = Evaluation()
    for i in range(len(pred)):
        boxes = component_boxes(truth[i] > 0) if true_boxes is None else np.asarray(true_boxes[i], float).reshape(-1, 4)
        evaluation.add(pred[i].astype(np.float32), truth[i], boxes, threshold=threshold)
    return evaluation.summary()
