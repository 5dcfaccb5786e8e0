import numpy as np
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
