"""An expert's answer on one task, turned into the mask the decoder trains on.

The answer is the task's latest submitted annotation. Brush regions are the mask;
a box with no brush pixels inside it becomes a SAM box-prompt mask (the expert drew
a box and did not wait for the mask); an annotation with no regions at all is a real
negative ("no pit here") and trains as an empty mask. A task whose only annotations
were skipped (cancelled) has no answer: it is neither trained on nor picked again.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from al_loop.embeddings.embed import TileRef
from al_loop.errors import RegionError, SchemaError
from al_loop.evaluation.metrics import component_boxes
from al_loop.studio.label_config import BRUSH, KEYPOINT, RECTANGLE, LabelSchema
from al_loop.studio.regions import MAX_REGIONS, Box, annotation_labels, boxes_in, check_count
from al_loop.training.masks import BoxMasker


@dataclass(frozen=True)
class Answer:
    task_id: int
    results: list[dict]  # the annotation's regions
    annotation_id: int | None = None
    user: int | None = None  # Label Studio's id of the user who submitted it (``completed_by``)
    lead_time: float | None = None  # seconds the user spent on it, where Label Studio recorded them


def task_items(task: dict, key: str) -> list[dict]:
    """A task's ``annotations`` or ``predictions``: a list of objects, each with a list ``result``;
    anything else (a string, a list of numbers) is a RegionError naming the field."""
    items = task.get(key) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise RegionError(f"the task's {key!r} must be a list of objects")
    if not all(isinstance(i.get("result") or [], list) for i in items):
        raise RegionError(f"each of the task's {key!r} must hold a 'result' list")
    return items


def _id_order(item: dict) -> tuple:
    # Ids are numbers from Label Studio, but a hand-made task may mix in strings or nulls:
    # order numbers among numbers and the rest after them instead of failing to compare.
    ident = item.get("id") or 0
    if isinstance(ident, (int, float)) and not isinstance(ident, bool):
        return (0, ident, "")
    return (1, 0, str(ident))


def _newest_first(item: dict) -> tuple:
    return (str(item.get("updated_at") or item.get("created_at") or ""), _id_order(item))


def latest_answer(task: dict) -> Answer | None:
    """The newest submitted (not skipped) annotation of a task, or None."""
    submitted = [a for a in task_items(task, "annotations") if not a.get("was_cancelled")]
    if not submitted:
        return None
    return _answer(task, max(submitted, key=_newest_first))


def answers_by_user(task: dict) -> dict[int, Answer]:
    """Each user's newest submitted (not skipped) annotation of a task, by Label Studio user id:
    with overlap, every expert's answer counts, not only the newest of all."""
    newest: dict[int, dict] = {}
    for item in task_items(task, "annotations"):
        if item.get("was_cancelled"):
            continue
        user = _user_id(item.get("completed_by"))
        if user not in newest or _newest_first(item) > _newest_first(newest[user]):
            newest[user] = item
    return {user: _answer(task, item) for user, item in newest.items()}


def _answer(task: dict, item: dict) -> Answer:
    lead = item.get("lead_time")
    return Answer(int(task["id"]), list(item.get("result") or []), item.get("id"), _user_id(item.get("completed_by")),
                  float(lead) if isinstance(lead, (int, float)) else None)


def _user_id(completed_by) -> int:
    # The JSON export gives the id; some exports give the user object.
    if isinstance(completed_by, dict):
        completed_by = completed_by.get("id")
    return int(completed_by) if isinstance(completed_by, (int, str)) and str(completed_by).isdigit() else -1


def was_skipped(task: dict) -> bool:
    """Every annotation of the task is a skip: the expert declined it."""
    annotations = task.get("annotations") or []
    return bool(annotations) and all(a.get("was_cancelled") for a in annotations)


def prompt_boxes(task: dict, size: tuple[int, int], max_regions: int = MAX_REGIONS) -> list[Box]:
    """Boxes to prompt SAM with: from the newest annotation holding any, else from predictions
    (e.g. imported expert boxes)."""
    for key in ("annotations", "predictions"):
        for item in sorted(task_items(task, key), key=_id_order, reverse=True):
            if item.get("was_cancelled"):
                continue
            results = item.get("result") or []
            check_count(results, f"a task's {key[:-1]}", max_regions)
            boxes = boxes_in(results, size)
            if boxes:
                return boxes
    return []


def answer_mask(
    answer: Answer,
    size: tuple[int, int],
    schema: LabelSchema,
    box_masks: Callable[[Sequence[Box]], list[np.ndarray]],
) -> np.ndarray:
    """The training mask for an answer, a uint8 map of pit types (0 = none; 1..K, the order of
    the project's mask labels); ``box_masks`` prompts SAM for boxes that lack a mask, and the
    mask takes the box's type."""
    type_of = {c.name: {label: schema.type_of(label) for label in c.labels if label in schema.type_names}
               for c in schema.of_kind(BRUSH)}
    labels = annotation_labels(answer.results, size, type_of)
    bare = [b for b in boxes_in(answer.results, size) if not _covered(labels > 0, b)]
    for part, box in zip(box_masks(bare) if bare else [], bare, strict=False):
        labels[part] = schema.type_of(box.label)
    return labels


def answers_to_masks(
    answers: dict[int, Answer], tiles: dict[int, TileRef], schema: LabelSchema, masker: BoxMasker
) -> tuple[dict[int, np.ndarray], list[str]]:
    """The training mask of every answered task whose tile is known ((H, W) uint8 of types),
    bare boxes through ``masker``; an answer that cannot be read is a warning naming its task."""
    masks, warnings = {}, []
    for task_id, answer in answers.items():
        tile = tiles.get(task_id)
        if tile is None:
            continue
        try:
            masks[task_id] = answer_mask(
                answer, tile.size, schema,
                lambda boxes, tile=tile: masker(tile, np.array([b.as_xyxy() for b in boxes], dtype=np.float32)))
        except (RegionError, SchemaError) as exc:
            warnings.append(f"task {task_id}: its annotation cannot be read ({exc}); fix it in Label Studio")
    return masks, warnings


def expert_objects(answer: Answer, truth: np.ndarray, schema: LabelSchema) -> tuple[np.ndarray, np.ndarray]:
    """The pits an answer counts, as (boxes (N, 4), types (N,)): the boxes the expert drew, typed
    by their labels, or a brush-only answer's blobs; a box whose label is not a type, and every
    blob, takes the type painted over most of it."""
    boxes = boxes_in(answer.results, truth.shape)
    if not boxes:
        blobs = component_boxes(truth > 0)
        return blobs, np.array([_painted_type(truth, box) for box in blobs], dtype=int)
    types = [schema.type_of(b.label) if b.label in schema.type_names else _painted_type(truth, b.as_xyxy())
             for b in boxes]
    return np.array([b.as_xyxy() for b in boxes]).reshape(-1, 4), np.array(types, dtype=int)


def _painted_type(truth: np.ndarray, box) -> int:
    x0, y0, x1, y1 = (int(v) for v in box)
    painted = np.bincount(truth[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)].ravel(), minlength=2)[1:]
    return int(painted.argmax()) + 1  # type 1 where nothing is painted


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
