"""An expert's answer on one task, turned into the mask the decoder trains on.

The answer is the task's latest submitted annotation. Brush regions are the mask;
a box with no brush pixels inside it becomes a SAM box-prompt mask (the expert drew
a box and did not wait for the mask); an annotation with no regions at all is a real
negative ("no pit here") and trains as an empty mask. A task whose only annotations
were skipped (cancelled) has no answer: it is neither trained on nor picked again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from al_loop.studio.label_config import BRUSH, KEYPOINT, RECTANGLE, LabelSchema
from al_loop.studio.regions import Box, annotation_mask, boxes_in


@dataclass(frozen=True)
class Answer:
    task_id: int
    results: list[dict]  # the annotation's regions
    annotation_id: int | None = None


def latest_answer(task: dict) -> Answer | None:
    """The newest submitted (not skipped) annotation of a task, or None."""
    submitted = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not submitted:
        return None
    newest = max(submitted, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))
    return Answer(int(task["id"]), list(newest.get("result") or []), newest.get("id"))


def was_skipped(task: dict) -> bool:
    """Every annotation of the task is a skip: the expert declined it."""
    annotations = task.get("annotations") or []
    return bool(annotations) and all(a.get("was_cancelled") for a in annotations)


def prompt_boxes(task: dict, size: tuple[int, int]) -> list[Box]:
    """Boxes to prompt SAM with: from the newest annotation holding any, else from predictions
    (e.g. imported expert boxes)."""
    for source in (task.get("annotations") or [], task.get("predictions") or []):
        for item in sorted(source, key=lambda a: a.get("id") or 0, reverse=True):
            if item.get("was_cancelled"):
                continue
            boxes = boxes_in(item.get("result") or [], size)
            if boxes:
                return boxes
    return []


def answer_mask(
    answer: Answer,
    size: tuple[int, int],
    schema: LabelSchema,
    box_masks: Callable[[Sequence[Box]], list[np.ndarray]],
) -> np.ndarray:
    """The training mask for an answer; ``box_masks`` prompts SAM for boxes that lack a mask."""
    brush_names = {c.name for c in schema.of_kind(BRUSH)}
    mask = annotation_mask(answer.results, size, brush_names)
    bare = [b for b in boxes_in(answer.results, size) if not _covered(mask, b)]
    for part in box_masks(bare) if bare else []:
        mask |= part
    return mask


def _covered(mask: np.ndarray, box: Box) -> bool:
    y0, y1 = int(box.y0), max(int(box.y0) + 1, int(np.ceil(box.y1)))
    x0, x1 = int(box.x0), max(int(box.x0) + 1, int(np.ceil(box.x1)))
    return bool(mask[y0:y1, x0:x1].any())


def unknown_labels(answer: Answer, schema: LabelSchema) -> list[str]:
    """What in an answer the labelling config does not know: a label, or a whole control.

    Training on such a region would guess at what the expert meant, so the loop refuses
    it and names the task to fix instead.
    """
    controls = {c.name: c for c in schema.controls}
    problems = []
    for result in answer.results:
        kind = result.get("type") if isinstance(result, dict) else None
        if kind not in (BRUSH, RECTANGLE, KEYPOINT):
            continue
        control = controls.get(result.get("from_name"))
        if control is None:
            problems.append(f"a {kind} region of {result.get('from_name')!r}, a control the labelling config does not have")
            continue
        for label in (result.get("value") or {}).get(kind) or []:
            if label not in control.labels:
                problems.append(f"label {label!r}, which {control.name!r} does not have (it has: {', '.join(control.labels)})")
    return problems
