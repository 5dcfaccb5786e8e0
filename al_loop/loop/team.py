"""Several experts per task: what the loop learns from when a team answers, and the team's figures.

With ``annotators`` of 2 or more (``init --annotators N``), every pushed task waits for N
answers from different users. Each expert's answer becomes a mask the way a lone expert's
does (:func:`al_loop.studio.answers.answers_to_masks`: brush regions, and SAM for bare
boxes), then outlines, and the team's agreement and consensus are computed on them
(:mod:`al_loop.evaluation.agreement`). The decoder learns from the consensus, never from
one expert picked at random.

A task goes to review when a pit has no majority (with two experts: a pit one of them did
not draw, or a type they disagree on) or when the experts' mean IoU of matched pits is below
``review_below``. The annotations present when it was flagged are recorded; a later
annotation on it, by anyone, is the reviewer's, and it becomes what the decoder learns from.
Until then the task is left out of training, or ``next-batch`` waits for it (``review``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from al_loop.embeddings.embed import TileRef
from al_loop.evaluation.agreement import (
    agreement_with,
    consensus,
    consensus_labels,
    outlines_of,
    tile_agreement,
)
from al_loop.studio.answers import Answer, answers_to_masks
from al_loop.studio.label_config import LabelSchema

PENDING, REVIEWED = "pending", "reviewed"


@dataclass
class TeamAnswer:
    """The team on one task: its agreement, each expert against the consensus, the review state
    (None: agreed; ``pending``; ``reviewed``), the annotation ids it was flagged with, and the
    mask the decoder learns from ((H, W) uint8 of types; None while the review is pending)."""

    task_id: int
    agreement: dict
    with_consensus: list[dict]
    review: str | None
    flagged: list[int]
    mask: np.ndarray | None

    def record(self) -> dict:
        """What the workspace keeps of it (everything but the mask)."""
        return {"agreement": self.agreement, "with_consensus": self.with_consensus, "review": self.review,
                "flagged": self.flagged}


def team_answers(
    by_user: dict[int, dict[int, Answer]],
    tiles: dict[int, TileRef],
    schema: LabelSchema,
    masker: Callable,
    names: dict[int, str],
    earlier: dict[int, dict],
    review_below: float,
) -> tuple[dict[int, TeamAnswer], list[str]]:
    """Every task at least two experts answered, whose tile is known: agreement, consensus and
    review (``earlier``: the workspace's records, which hold what a review was asked on)."""
    masks, warnings = _user_masks(by_user, tiles, schema, masker)
    found = {}
    for task_id, per_user in masks.items():
        if len(per_user) < 2:
            continue
        outlines = [outlines_of(names.get(u, f"user {u}"), m, schema.type_names) for u, m in sorted(per_user.items())]
        agreed = consensus(outlines)
        together = tile_agreement(outlines)
        disputed = agreed.needs_review or (together.mask_iou is not None and together.mask_iou < review_below)
        found[task_id] = _decide(task_id, by_user[task_id], per_user, together.as_dict(),
                                 [agreement_with(o, agreed) for o in outlines],
                                 consensus_labels(agreed, schema.type_names), disputed, earlier.get(task_id))
    return found, warnings


def _user_masks(by_user, tiles, schema, masker) -> tuple[dict[int, dict[int, np.ndarray]], list[str]]:
    """Each expert's training mask of each task: task id -> user id -> (H, W) uint8."""
    users = {u for per_task in by_user.values() for u in per_task}
    masks: dict[int, dict[int, np.ndarray]] = {}
    warnings = []
    for user in sorted(users):
        mine = {t: per_task[user] for t, per_task in by_user.items() if user in per_task and t in tiles}
        found, problems = answers_to_masks(mine, tiles, schema, masker)
        warnings += problems
        for task_id, mask in found.items():
            masks.setdefault(task_id, {})[user] = mask
    return masks, warnings


def _decide(task_id: int, answers: dict[int, Answer], masks: dict[int, np.ndarray], agreement: dict,
            with_consensus: list[dict], agreed: np.ndarray, disputed: bool, earlier: dict | None) -> TeamAnswer:
    """Agreed (the consensus trains), pending (nothing trains yet) or reviewed (the reviewer's answer trains)."""
    flagged = list((earlier or {}).get("flagged") or [])
    if earlier and earlier.get("review") in (PENDING, REVIEWED):
        later = [(a.annotation_id, u) for u, a in answers.items() if a.annotation_id not in set(flagged)]
        if later:  # an answer given after the task was flagged: the reviewer's, newest first
            _, reviewer = max(later)
            return TeamAnswer(task_id, agreement, with_consensus, REVIEWED, flagged, masks[reviewer])
    if not disputed:
        return TeamAnswer(task_id, agreement, with_consensus, None, [], agreed)
    ids = sorted(a.annotation_id for a in answers.values() if a.annotation_id is not None)
    return TeamAnswer(task_id, agreement, with_consensus, PENDING, flagged or ids, None)


def annotator_figures(answers: list[dict], records: dict[int, dict]) -> list[dict]:
    """Per expert: tiles answered, median seconds per tile (where Label Studio recorded them), and
    agreement with the consensus over the tasks the team shared (mean IoU of matched pits, pits
    matched, missed and extra). ``answers``: the workspace's answer rows; ``records``: its team records."""
    figures: dict[str, dict] = {}
    for row in answers:
        entry = figures.setdefault(row["email"], {"annotator": row["email"], "tiles": 0, "seconds": []})
        entry["tiles"] += 1
        if row["lead_time"] is not None:
            entry["seconds"].append(row["lead_time"])
    for record in records.values():
        for mine in record.get("with_consensus", []):
            entry = figures.setdefault(mine["annotator"], {"annotator": mine["annotator"], "tiles": 0, "seconds": []})
            for key in ("matched", "missed", "extra"):
                entry[key] = entry.get(key, 0) + mine[key]
            if mine["mask_iou"] is not None:
                entry.setdefault("ious", []).append(mine["mask_iou"])
    return [_summarise(entry) for _, entry in sorted(figures.items())]


def _summarise(entry: dict) -> dict:
    seconds, ious = entry.pop("seconds"), entry.pop("ious", [])
    return {**entry, "seconds_per_tile": float(np.median(seconds)) if seconds else None,
            "iou_with_consensus": float(np.mean(ious)) if ious else None,
            **{k: entry.get(k, 0) for k in ("matched", "missed", "extra")}}
