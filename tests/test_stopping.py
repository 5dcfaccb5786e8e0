import numpy as np
import pytest

from al_loop.evaluation.agreement import kappa_of_codes as cohen_kappa
from al_loop.query.stopping import (
    STOP_MESSAGE,
    agreement,
    check_stopping,
    object_f1,
    should_stop,
    stop_round,
)


def _maps(rng, shift=0, n=6, size=48):
    """Pit probability maps of ``n`` tiles, each with three round pits, moved ``shift`` pixels."""
    yy, xx = np.mgrid[:size, :size]
    out = np.full((n, size, size), 0.05)
    centres = rng.integers(8, size - 8, (n, 3, 2))
    for i in range(n):
        for cy, cx in centres[i]:
            out[i][(yy - cy - shift) ** 2 + (xx - cx) ** 2 < 16] = 0.9
    return out


def test_kappa_is_one_for_identical_zero_for_chance_and_corrects_for_background():
    rng = np.random.default_rng(0)
    a = (rng.random(10_000) < 0.05).astype(int)
    assert cohen_kappa(a, a) == 1.0
    b = (rng.random(10_000) < 0.05).astype(int)  # independent: agreement by chance only
    assert abs(cohen_kappa(a, b)) < 0.05
    assert (a == b).mean() > 0.85  # raw agreement is high on mostly-background pixels; kappa is not fooled


def test_object_f1_counts_overlapping_objects():
    rng = np.random.default_rng(1)
    maps = _maps(rng) > 0.5
    assert object_f1(maps, maps) == 1.0
    assert object_f1(maps, np.zeros_like(maps)) == 0.0
    assert object_f1(np.zeros_like(maps), np.zeros_like(maps)) == 1.0
    moved = _maps(np.random.default_rng(1), shift=20) > 0.5  # moved off their old places
    assert object_f1(maps, moved) < 0.5


def test_agreement_on_per_tile_arrays_of_different_sizes():
    small, large = np.full((10, 12), 0.9), np.full((20, 8), 0.1)
    found = agreement([small, large], [small, large])
    assert found.kappa == 1.0 and found.object_f1 == 1.0 and found.tiles == 2
    with pytest.raises(ValueError, match="different shapes"):
        agreement([small], [large])


def test_the_rule_does_not_fire_on_decoders_that_still_change():
    """A decoder sequence whose pits move every round: agreement stays low, the rule never fires."""
    rng = np.random.default_rng(2)
    rounds = [_maps(np.random.default_rng(2), shift=s) for s in (0, 6, 12, 18, 24, 30)]
    history = [None] + [agreement(a, b).kappa for a, b in zip(rounds, rounds[1:], strict=False)]
    assert max(v for v in history if v is not None) < 0.9
    assert stop_round(history, threshold=0.9, window=3) is None and not should_stop(history, 0.9, 3)
    del rng


def test_the_rule_fires_on_identical_decoders_after_the_window():
    maps = _maps(np.random.default_rng(3))
    changing = _maps(np.random.default_rng(3), shift=8)
    sequence = [changing, maps, maps, maps, maps]
    history = [None] + [agreement(a, b).kappa for a, b in zip(sequence, sequence[1:], strict=False)]
    assert history[1] < 0.9 and history[2:] == [1.0, 1.0, 1.0]
    assert stop_round(history, threshold=0.99, window=3) == 4  # three agreeing pairs: rounds 3, 4 and 5
    assert not should_stop(history[:4], 0.99, 3) and should_stop(history, 0.99, 3)
    assert stop_round(history, threshold=0.99, window=4) is None  # a longer window waits longer


def test_check_stopping_over_workspace_rounds():
    rounds = [{"round": 0, "labelled": 0, "decoder": None, "stopping": None}]
    rounds += [{"round": i, "labelled": 5 * i, "decoder": f"round-{i}.pt",
                "stopping": None if i == 1 else {"kappa": k, "object_f1": 0.5}}
               for i, k in zip(range(1, 6), [None, 0.5, 0.995, 0.996, 0.999], strict=True)]
    check = check_stopping(rounds)
    assert check.fired and check.message == STOP_MESSAGE and STOP_MESSAGE in check.describe()
    assert [h[0] for h in check.history] == [1, 2, 3, 4, 5]
    assert not check_stopping(rounds[:5]).fired and check_stopping(rounds[:5]).message is None
    assert not check_stopping(rounds, measure="object_f1").fired


def test_next_batch_rounds_record_the_agreement_and_the_curve_keeps_its_points(tmp_path):
    """The agreement goes in with a round's metrics; a round with only it is no point of the curve."""
    from al_loop.loop.workspace import RoundPlan, StateUpdate, Workspace, WorkspaceConfig

    workspace = Workspace(tmp_path / "ws")
    workspace.create(WorkspaceConfig("http://ls", 1), [(1, "a", "validation"), (2, "b", "pool")])
    kappas = {1: None, 2: 0.995, 3: 0.997, 4: 0.999}
    for number, kappa in kappas.items():
        stop = {} if kappa is None else {"stop_kappa": kappa, "stop_object_f1": 0.8}
        metrics = {"miou": 0.5} if number == 1 else stop  # later rounds: no validation tile labelled
        workspace.record_plan(RoundPlan(number, "hybrid", 5, number, f"round-{number}.pt", StateUpdate({}), {}, [],
                                        metrics))
        workspace.finish_round(number, None)
    assert [r["stopping"] for r in workspace.agreements()] == [None] + [{"kappa": k, "object_f1": 0.8} for k in (0.995, 0.997, 0.999)]
    assert [r["round"] for r in workspace.curve()] == [1]
    check = check_stopping(workspace.agreements())
    assert check.fired and check.history[-1] == (4, 4, 0.999)
