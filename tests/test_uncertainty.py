import numpy as np
from modAL.uncertainty import _proba_entropy, _proba_margin, _proba_uncertainty

from al_loop.query import uncertainty as u


def test_measures_equal_modal_on_pixels():
    p = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    two = np.stack([1 - p.ravel(), p.ravel()], axis=1).astype(np.float64)
    assert np.isclose(u.entropy(p), _proba_entropy(two).mean(), atol=1e-5)
    assert np.isclose(u.least_confident(p), _proba_uncertainty(two).mean(), atol=1e-6)
    assert np.isclose(u.margin(p), 1 - _proba_margin(two).mean(), atol=1e-6)


def test_confident_tiles_score_lower():
    sure = np.where(np.random.default_rng(1).random((16, 16)) > 0.5, 0.99, 0.01)
    unsure = np.full((16, 16), 0.5)
    for measure in u.PIXEL_MEASURES.values():
        assert measure(unsure) > measure(sure)


def test_bald_zero_when_samples_agree_positive_when_they_differ():
    p = np.full((8, 8), 0.5)
    assert abs(u.bald(np.stack([p] * 6))) < 1e-6  # uncertain but agreed: aleatoric, not epistemic
    disagree = np.stack([np.full((8, 8), 0.02), np.full((8, 8), 0.98)] * 3)
    assert u.bald(disagree) > 0.5
