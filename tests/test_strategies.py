import numpy as np
import pytest

from al_loop.query.strategies import STRATEGIES, PoolScores, get_strategy


def _rng():
    return np.random.default_rng(0)


def test_uncertainty_strategies_take_the_highest_first():
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.2])
    for name in ("entropy", "margin", "least_confident", "bald"):
        pool = PoolScores(scores={name: scores})
        assert get_strategy(name).select(pool, 3, _rng()).tolist() == [1, 3, 2]


def test_random_is_seeded_and_distinct():
    pool = PoolScores(scores={}, features=np.zeros((50, 2)))
    a = get_strategy("random").select(pool, 10, np.random.default_rng(1))
    b = get_strategy("random").select(pool, 10, np.random.default_rng(1))
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 10


def test_diverse_batch_is_not_copies_of_one_scene():
    rng = np.random.default_rng(0)
    scene = rng.normal(size=8)
    copies = scene + rng.normal(0, 0.01, (5, 8))  # five near-identical tiles (augmented versions)
    others = rng.normal(size=(20, 8)) * 3
    features = np.concatenate([copies, others])
    entropy = np.concatenate([np.full(5, 0.9), rng.uniform(0.5, 0.8, 20)])
    pool = PoolScores(scores={"entropy": entropy}, features=features, labelled_features=rng.normal(size=(3, 8)))
    top = get_strategy("entropy").select(pool, 5, _rng())
    assert set(top.tolist()) == {0, 1, 2, 3, 4}  # plain uncertainty takes all five copies
    diverse = get_strategy("diverse").select(pool, 5, _rng())
    assert len(set(diverse.tolist())) == 5 and len(set(diverse.tolist()) & {0, 1, 2, 3, 4}) <= 2


def test_cold_start_needs_no_scores():
    features = np.random.default_rng(2).normal(size=(30, 4))
    picked = get_strategy("cold_start").select(PoolScores(scores={}, features=features), 6, _rng())
    assert len(set(picked.tolist())) == 6


def test_registry_and_unknown_name():
    assert {"entropy", "margin", "least_confident", "bald", "random", "diverse"} <= set(STRATEGIES)
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        get_strategy("nope")


def test_random_needs_only_the_pool_size():
    picked = get_strategy("random").select(PoolScores(scores={}, size=7), 3, _rng())
    assert len(set(picked.tolist())) == 3 and max(picked) < 7


def test_asking_for_more_than_the_pool():
    pool = PoolScores(scores={"entropy": np.array([0.3, 0.1])})
    assert sorted(get_strategy("entropy").select(pool, 5, _rng()).tolist()) == [0, 1]


def test_information_density_equals_modal_in_blocks():
    from modAL.density import information_density as modal_density

    from al_loop.query.strategies import information_density

    features = np.random.default_rng(3).normal(size=(37, 6))
    np.testing.assert_allclose(information_density(features, block=5), modal_density(features, "euclidean"), rtol=1e-6)


def test_density_passes_over_an_uncertain_outlier():
    rng = np.random.default_rng(4)
    typical = rng.normal(0, 1, (40, 6))
    outliers = rng.normal(0, 1, (3, 6)) + 25.0  # a few scenes unlike the rest of the pool
    features = np.concatenate([typical, outliers])
    entropy = np.concatenate([rng.uniform(0.3, 0.6, 40), [0.9, 0.85, 0.8]])
    pool = PoolScores(scores={"entropy": entropy}, features=features)
    assert set(get_strategy("entropy").select(pool, 3, _rng()).tolist()) == {40, 41, 42}
    picked = get_strategy("density").select(pool, 3, _rng())
    assert not set(picked.tolist()) & {40, 41, 42}
    # among typical tiles it still prefers the uncertain ones
    assert entropy[picked].mean() > np.median(entropy[:40])


def test_density_needs_features():
    with pytest.raises(ValueError, match="needs pooled embeddings"):
        get_strategy("density").select(PoolScores(scores={"entropy": np.ones(4)}), 2, _rng())
