import numpy as np
import pytest
from modAL.uncertainty import _proba_entropy, _proba_margin, _proba_uncertainty

from al_loop.query import uncertainty as u


def test_measures_equal_modal_on_pixels():
    p = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    two = np.stack([1 - p.ravel(), p.ravel()], axis=1).astype(np.float64)
    assert np.isclose(u.entropy(u.binary(p)), _proba_entropy(two).mean(), atol=1e-5)
    assert np.isclose(u.least_confident(u.binary(p)), _proba_uncertainty(two).mean(), atol=1e-6)
    assert np.isclose(u.margin(u.binary(p)), 1 - _proba_margin(two).mean(), atol=1e-6)


def test_measures_equal_modal_on_six_classes():
    """Background and five pit types: the same measures on the K+1 distribution per pixel."""
    logits = np.random.default_rng(3).normal(size=(6, 16, 16))
    probs = np.exp(logits) / np.exp(logits).sum(axis=0)
    rows = probs.reshape(6, -1).T
    assert np.isclose(u.entropy(probs), _proba_entropy(rows).mean(), atol=1e-5)
    assert np.isclose(u.least_confident(probs), _proba_uncertainty(rows).mean(), atol=1e-6)
    assert np.isclose(u.margin(probs), 1 - _proba_margin(rows).mean(), atol=1e-6)


def test_rare_type_entropy_favours_uncertainty_about_rare_types():
    """Equally unsure pits, one probably of a type seen little (weight 4), one of a common type:
    the rare one ranks first; with equal weights the measure is the entropy."""
    rare = np.zeros((3, 4, 4))
    rare[0], rare[1] = 0.5, 0.5
    common = np.zeros((3, 4, 4))
    common[0], common[2] = 0.5, 0.5
    weights = [1.0, 12.0, 3.0]
    assert u.rare_type_entropy(rare, weights) > u.rare_type_entropy(common, weights)
    assert np.isclose(u.rare_type_entropy(rare, [1.0, 3.0, 3.0]), u.entropy(rare), atol=1e-6)


def test_confident_tiles_score_lower():
    sure = np.where(np.random.default_rng(1).random((16, 16)) > 0.5, 0.99, 0.01)
    unsure = np.full((16, 16), 0.5)
    for measure in u.PIXEL_MEASURES.values():
        assert measure(u.binary(unsure)) > measure(u.binary(sure))


def test_bald_zero_when_samples_agree_positive_when_they_differ():
    p = u.binary(np.full((8, 8), 0.5))
    assert abs(u.bald(np.stack([p] * 6))) < 1e-6  # uncertain but agreed: aleatoric, not epistemic
    disagree = np.stack([u.binary(np.full((8, 8), 0.02)), u.binary(np.full((8, 8), 0.98))] * 3)
    assert u.bald(disagree) > 0.5


def test_object_entropy_ranks_a_doubted_small_pit_above_a_mildly_unsure_background():
    """Tile A: confident background and a small pit at p = 0.6; tile B: no pit, p = 0.2 everywhere.
    The tile mean prefers B (its background dominates); the object-aware measure prefers A."""
    a = np.full((64, 64), 0.01)
    a[30:34, 30:34] = 0.6
    b = np.full((64, 64), 0.2)
    assert u.entropy(u.binary(b)) > u.entropy(u.binary(a))
    assert u.object_entropy(u.binary(a)) > 10 * u.object_entropy(u.binary(b))
    # a confident pit counts far less than a doubted one; a larger share of doubt on the pits counts more
    sure = np.full((64, 64), 0.01)
    sure[30:34, 30:34] = 0.999
    assert u.object_entropy(u.binary(a)) > 2 * u.object_entropy(u.binary(sure))
    half = sure.copy()
    half[5:9, 5:9] = 0.6  # one doubted pit beside a confident one
    assert u.object_entropy(u.binary(sure)) < u.object_entropy(u.binary(half)) < u.object_entropy(u.binary(a))
    # the tile mean of B's background alone decides nothing: without a pit the score is only the tie-break
    assert u.object_entropy(u.binary(b)) == pytest.approx(u.OBJECT_TIE_BREAK * u.entropy(u.binary(b)) / np.log(2), rel=1e-3)


def test_object_entropy_on_types_uses_the_pit_probability_of_any_type():
    probs = np.zeros((3, 32, 32))
    probs[0] = 0.99
    probs[1] = 0.01
    decided = probs.copy()
    probs[:, 10:14, 10:14] = np.array([0.3, 0.35, 0.35])[:, None, None]  # pit (0.7) of an undecided type
    decided[:, 10:14, 10:14] = np.array([0.3, 0.69, 0.01])[:, None, None]  # the same pit, of a decided type
    background = np.zeros((3, 32, 32))
    background[0], background[1] = 0.99, 0.01
    assert u.object_entropy(probs) > u.object_entropy(decided) > 100 * u.object_entropy(background)
    assert "object_entropy" in u.PIXEL_MEASURES


def test_object_entropy_leaves_out_the_specks_pre_annotation_would_not_draw():
    """A tile whose only predicted 'pit' is a 2 x 2 speck at p = 0.55 scores as a tile without a
    pit: pre-annotation would draw nothing on it. From min_pixels up the same speck counts."""
    speck = np.full((64, 64), 0.01)
    speck[30:32, 30:32] = 0.55
    pit = np.full((64, 64), 0.01)
    pit[20:32, 20:32] = 0.7
    assert u.object_entropy(u.binary(speck), min_pixels=9) < 0.01 < u.object_entropy(u.binary(pit), min_pixels=9)
    assert u.object_entropy(u.binary(speck), min_pixels=4) > 0.1


def test_pool_scoring_counts_a_pit_from_two_embedding_cells_as_pre_annotation_does():
    from al_loop.models.pits import min_object_pixels, pit_objects

    probs = u.binary(np.zeros((64, 64)))
    probs[1, :8, :8], probs[1, 30:38, 30:46] = 0.9, 0.9  # one cell (8 x 8) and two cells
    probs[0] = 1 - probs[1]
    kept = pit_objects(probs, min_object_pixels((64, 64), 8))
    assert not kept[:8, :8].any() and kept[30:38, 30:46].all()


def test_object_entropy_grown_in_its_box_is_grown_on_the_whole_map():
    """Pits at the map's edge and apart: growing them inside their bounding box gives the pixels
    that growing the whole map gives."""
    from scipy import ndimage

    from al_loop.models.pits import pit_objects

    rng = np.random.default_rng(4)
    for _ in range(20):
        p = np.clip(rng.normal(0.05, 0.05, (64, 64)), 0, 1)
        for _ in range(3):
            y, x = rng.integers(0, 60, 2)
            p[y:y + 6, x:x + 6] = rng.uniform(0.5, 0.9)
        probs = u.binary(p)
        norm = u.pixel_entropy(probs) / np.log(2)
        region = ndimage.binary_dilation(pit_objects(probs, 9), iterations=u.OBJECT_BORDER)
        expected = float(norm[region].mean()) + u.OBJECT_TIE_BREAK * float(norm.mean())
        assert u.object_entropy(probs, min_pixels=9) == pytest.approx(expected, abs=1e-9)
