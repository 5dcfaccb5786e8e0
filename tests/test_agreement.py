"""Agreement and consensus of a labelling team (issue 39), on masks whose IoU and kappa are
worked out by hand here."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from al_loop.evaluation.agreement import (
    Outlines,
    agreement_with,
    cohen_kappa,
    consensus,
    match_outlines,
    tile_agreement,
)

SIZE = (100, 100)


def square(r0: int, c0: int, side: int) -> np.ndarray:
    mask = np.zeros(SIZE, bool)
    mask[r0 : r0 + side, c0 : c0 + side] = True
    return mask


def outlines(name: str, *pits: tuple[np.ndarray, str]) -> Outlines:
    if not pits:
        return Outlines.empty(name, SIZE)
    return Outlines(name, np.stack([m for m, _ in pits]), tuple(t for _, t in pits))


def test_pits_match_one_to_one_at_iou_half():
    big = square(10, 10, 20)
    a = np.stack([big, square(60, 60, 10)])
    # b's first outline overlaps a's first by 20x16 of a 20x24 union (IoU 2/3); its second
    # overlaps the same pit less (IoU 0.25): the pair with the larger total IoU wins.
    b = np.stack([square(10, 14, 20), square(10, 20, 20), square(60, 60, 10)])
    pairs = match_outlines(a, b)
    assert [(i, j) for i, j, _ in pairs] == [(0, 0), (1, 2)]
    assert pairs[0][2] == pytest.approx(320 / 480)
    assert pairs[1][2] == pytest.approx(1.0)
    # below IoU 0.5 nothing matches
    assert match_outlines(a[:1], np.stack([square(10, 20, 20)])) == []


def test_kappa_by_hand_and_against_scikit_learn():
    first, second = ["pit", "pit", "skylight", "skylight"], ["pit", "skylight", "skylight", "skylight"]
    # observed 3/4; chance (2*1 + 2*3) / 16 = 1/2; kappa = (3/4 - 1/2) / (1 - 1/2) = 1/2
    assert cohen_kappa(first, second) == pytest.approx(0.5)
    assert cohen_kappa(first, second) == pytest.approx(cohen_kappa_score(first, second))
    assert cohen_kappa([], []) is None
    assert cohen_kappa(["pit"] * 3, ["pit"] * 3) == 1.0


def test_two_experts_one_misses_a_small_pit_one_types_differently():
    a = outlines("ann", (square(10, 10, 20), "pit"), (square(60, 60, 10), "skylight"),
                 (square(40, 40, 8), "pit"), (square(80, 10, 10), "skylight"))
    b = outlines("bob", (square(10, 14, 20), "pit"), (square(60, 60, 10), "skylight"),
                 (square(40, 40, 8), "skylight"), (square(80, 10, 10), "skylight"), (square(5, 80, 4), "pit"))
    agreement = tile_agreement([a, b])
    # four matched pits with IoU 2/3, 1, 1, 1; one pit only bob drew
    assert agreement.mask_iou == pytest.approx((2 / 3 + 3) / 4)
    assert agreement.pits == 5 and agreement.pits_by_one == 1
    # types of the matched pits: ann [pit, skylight, pit, skylight], bob [pit, skylight, skylight, skylight]
    # observed 3/4, chance (2*1 + 2*3)/16 = 1/2 -> kappa 1/2
    assert agreement.type_kappa == pytest.approx(0.5)
    row = agreement.as_dict()
    assert row["mask_iou"] == pytest.approx(agreement.mask_iou) and row["type_kappa"] == pytest.approx(0.5)


def test_consensus_of_two_keeps_what_both_drew_and_sends_the_rest_to_review():
    a = outlines("ann", (square(10, 10, 20), "pit"), (square(60, 60, 10), "skylight"))
    b = outlines("bob", (square(10, 14, 20), "pit"), (square(60, 60, 10), "pit"), (square(5, 80, 4), "pit"))
    result = consensus([a, b])
    # the shifted pit: only the pixels both painted (20 x 16)
    assert result.types == ("pit",)
    assert (result.mask == 1).sum() == 320
    assert result.mask[10:30, 14:30].all() and not result.mask[10:30, 10:14].any()
    # the pit typed two ways and the pit one of two drew are disputed, not guessed
    assert len(result.disputed) == 2 and result.needs_review


def test_consensus_of_three_is_a_majority():
    pit, lone = square(20, 20, 10), square(70, 70, 6)
    team = [outlines("a", (pit, "pit"), (lone, "pit")), outlines("b", (pit, "skylight")),
            outlines("c", (square(20, 22, 10), "skylight"))]
    result = consensus(team)
    assert result.types == ("skylight",) and result.support == (3,)
    assert result.left_out == 1 and not result.needs_review
    # pixels kept where at least two of the three painted them: the union of a's and b's square
    assert (result.mask == 1).sum() == 100
    per_expert = [agreement_with(answer, result) for answer in team]
    assert [r["matched"] for r in per_expert] == [1, 1, 1]
    assert per_expert[0]["extra"] == 1
    assert per_expert[2]["mask_iou"] == pytest.approx(80 / 120)


def test_bad_answers_are_refused():
    with pytest.raises(ValueError, match="one type per pit"):
        Outlines("x", np.zeros((2, 4, 4), bool), ("pit",))
    with pytest.raises(ValueError, match="at least two"):
        tile_agreement([outlines("a")])
