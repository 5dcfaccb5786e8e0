"""A team's answers on arrays (issue 39): two experts' brush answers with known squares, whose
IoU and kappa are worked out by hand here, become the agreement, the consensus and the review
the loop records; a reviewer's later answer is what trains."""
from __future__ import annotations

import numpy as np
import pytest

from al_loop.embeddings.embed import TileRef
from al_loop.evaluation.agreement import consensus, consensus_labels, outlines_of, pooled_agreement, tile_agreement
from al_loop.loop.team import PENDING, REVIEWED, annotator_figures, team_answers
from al_loop.studio.answers import Answer
from al_loop.studio.label_config import parse_label_config, typed_label_config
from al_loop.studio.regions import mask_to_brush

from .helpers import KAPPA, MEAN_IOU, TEAM_SIZE, square
from .helpers import TEAM_A as A
from .helpers import TEAM_B as B

SCHEMA = parse_label_config(typed_label_config(["pit", "skylight"]))
SIZE = TEAM_SIZE


def answer(task_id: int, pits: list[tuple[np.ndarray, str]], annotation_id: int, user: int) -> Answer:
    control = SCHEMA.mask_control
    return Answer(task_id, [mask_to_brush(m, control, label) for m, label in pits], annotation_id, user)


def labels_of(pits: list[tuple[np.ndarray, str]]) -> np.ndarray:
    labels = np.zeros(SIZE, np.uint8)
    for mask, name in pits:
        labels[mask] = SCHEMA.type_names.index(name) + 1
    return labels


def no_boxes(tile, boxes):
    raise AssertionError("brush answers need no SAM")


TILES = {7: TileRef("t7.png", "sha7", SIZE), 8: TileRef("t8.png", "sha8", SIZE)}
NAMES = {1: "a@team", 2: "b@team"}


def test_the_two_experts_agreement_is_the_one_worked_out_by_hand():
    together = tile_agreement([outlines_of("a", labels_of(A), SCHEMA.type_names),
                               outlines_of("b", labels_of(B), SCHEMA.type_names)])
    assert together.mask_iou == pytest.approx(MEAN_IOU)
    assert together.type_kappa == pytest.approx(KAPPA)
    assert (together.pits, together.pits_by_one) == (4, 1)
    pooled = pooled_agreement([together.as_dict(), together.as_dict()])  # two such tiles: the same figures, summed counts
    assert pooled["mask_iou"] == pytest.approx(MEAN_IOU) and pooled["type_kappa"] == pytest.approx(KAPPA)
    assert (pooled["tasks"], pooled["pits"], pooled["pits_by_one"]) == (2, 8, 2)


def test_the_consensus_keeps_pits_both_drew_with_their_shared_pixels_and_types():
    outlines = [outlines_of("a", labels_of(A), SCHEMA.type_names), outlines_of("b", labels_of(B), SCHEMA.type_names)]
    agreed = consensus(outlines)
    labels = consensus_labels(agreed, SCHEMA.type_names)
    # pit 1: where both painted (300 px), type pit (1); pit 2: skylight (2); pit 3's type is a tie and
    # pit 4 only one drew: both wait for a reviewer
    assert int((labels == 1).sum()) == 300 and int((labels == 2).sum()) == 400
    assert agreed.needs_review and len(agreed.disputed) == 2


def test_a_disputed_task_waits_for_review_and_then_the_reviewers_answer_trains():
    by_user = {7: {1: answer(7, A, 70, 1), 2: answer(7, B, 71, 2)},
               8: {1: answer(8, A[:2], 80, 1), 2: answer(8, A[:2], 81, 2)}}
    found, warnings = team_answers(by_user, TILES, SCHEMA, no_boxes, NAMES, {}, review_below=0.6)
    assert warnings == []
    assert found[7].review == PENDING and found[7].mask is None and found[7].flagged == [70, 71]
    assert found[8].review is None and np.array_equal(found[8].mask, labels_of(A[:2]))  # they agree: the consensus
    assert found[7].agreement["mask_iou"] == pytest.approx(MEAN_IOU)

    # a reviewer (user 1 again, or anyone) answers task 7 after it was flagged: that answer trains
    earlier = {t: f.record() for t, f in found.items()}
    reviewed = [(square(10, 12, 20, 20), "pit"), (square(100, 100, 20, 20), "skylight")]
    by_user[7][3] = answer(7, reviewed, 72, 3)
    again, _ = team_answers(by_user, TILES, SCHEMA, no_boxes, NAMES, earlier, review_below=0.6)
    assert again[7].review == REVIEWED and np.array_equal(again[7].mask, labels_of(reviewed))


def test_a_task_below_the_iou_threshold_goes_to_review_even_when_every_pit_has_a_majority():
    loose = [(square(8, 8, 24, 24), "pit")]  # IoU with A's first pit 400 / 576 = 0.69
    by_user = {7: {1: answer(7, A[:1], 70, 1), 2: answer(7, loose, 71, 2)}}
    strict, _ = team_answers(by_user, TILES, SCHEMA, no_boxes, NAMES, {}, review_below=0.75)
    lenient, _ = team_answers(by_user, TILES, SCHEMA, no_boxes, NAMES, {}, review_below=0.6)
    assert strict[7].review == PENDING and lenient[7].review is None
    assert int((lenient[7].mask > 0).sum()) == 400  # the consensus: where both painted


def test_each_experts_figures_count_what_they_missed_and_added_against_the_consensus():
    by_user = {8: {1: answer(8, A[:2], 80, 1), 2: answer(8, A[:2] + [B[3]], 81, 2)},
               9: {1: answer(9, A[:1], 90, 1), 2: answer(9, A[:1], 91, 2)}}
    tiles = {**TILES, 9: TileRef("t9.png", "sha9", SIZE)}
    found, _ = team_answers(by_user, tiles, SCHEMA, no_boxes, NAMES, {}, review_below=0.6)
    rows = [{"email": NAMES[u], "lead_time": t} for u, t in ((1, 30.0), (1, 50.0), (2, None), (2, None))]
    figures = {f["annotator"]: f for f in annotator_figures(rows, {t: f.record() for t, f in found.items()})}
    assert figures["a@team"]["seconds_per_tile"] == 40.0 and figures["b@team"]["seconds_per_tile"] is None
    # task 8: b's extra pit is only b's, so it is not in the consensus (it waits for a reviewer)
    assert (figures["b@team"]["extra"], figures["a@team"]["extra"]) == (1, 0)
    assert figures["a@team"]["matched"] == 3 and figures["a@team"]["iou_with_consensus"] == pytest.approx(1.0)


def test_a_task_awaits_review_until_an_answer_comes_after_it_was_flagged():
    from al_loop.loop.next_batch import awaiting_review

    records = {7: {"review": PENDING, "flagged": [70, 71]}, 8: {"review": None, "flagged": []}}
    flagged_only = {7: {1: answer(7, A, 70, 1), 2: answer(7, B, 71, 2)}}
    assert awaiting_review(records, flagged_only) == [7]
    with_review = {7: {**flagged_only[7], 3: answer(7, A, 72, 3)}}
    assert awaiting_review(records, with_review) == []
