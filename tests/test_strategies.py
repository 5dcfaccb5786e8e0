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


# -- diversity and typicality: each test fails if the strategy ignores the embeddings -----------


def _clusters(rng, centres, per, spread=0.3, dim=8):
    return np.concatenate([rng.normal(c, spread, (per, dim)) for c in centres])


def test_coreset_picks_from_both_separated_clusters_and_away_from_labels():
    rng = np.random.default_rng(5)
    features = _clusters(rng, [0.0, 10.0], 30)  # tiles 0-29 near 0, 30-59 near 10
    picked = get_strategy("coreset").select(PoolScores(scores={}, features=features), 2, _rng())
    assert {int(i) // 30 for i in picked} == {0, 1}
    # with a label already in the second cluster, the first pick goes to the first one
    labelled = features[30:31] + 0.01
    first = get_strategy("coreset").select(PoolScores(scores={}, features=features, labelled_features=labelled), 1, _rng())
    assert first[0] < 30


def test_typiclust_covers_clusters_and_passes_over_far_outliers():
    rng = np.random.default_rng(6)
    centres = [0.0, 8.0, 16.0]
    features = np.concatenate([_clusters(rng, centres, 25), rng.normal(200.0, 1.0, (3, 8))])  # 75-77: outliers
    picked = get_strategy("typiclust").select(PoolScores(scores={}, features=features), 3, np.random.default_rng(0))
    assert not set(picked.tolist()) & {75, 76, 77}
    assert {int(i) // 25 for i in picked} == {0, 1, 2}
    # the pick of each cluster is among its most typical tiles: near the centre, not its rim
    for i in picked:
        centre = features[(int(i) // 25) * 25 : (int(i) // 25 + 1) * 25].mean(axis=0)
        distances = np.linalg.norm(features[(int(i) // 25) * 25 : (int(i) // 25 + 1) * 25] - centre, axis=1)
        assert np.linalg.norm(features[i] - centre) <= np.quantile(distances, 0.5)


def test_typiclust_goes_to_the_cluster_no_label_covers():
    rng = np.random.default_rng(7)
    features = _clusters(rng, [0.0, 8.0], 25)
    labelled = _clusters(rng, [0.0], 3)  # the first cluster is labelled already
    picked = get_strategy("typiclust").select(PoolScores(scores={}, features=features, labelled_features=labelled), 1,
                                              np.random.default_rng(0))
    assert picked[0] >= 25


def test_hybrid_turns_from_typicality_to_uncertainty_as_labels_grow():
    rng = np.random.default_rng(8)
    features = _clusters(rng, [0.0, 8.0, 16.0], 30)
    entropy = rng.uniform(0.0, 0.2, 90)
    entropy[[5, 40, 70]] = [0.9, 0.95, 0.85]  # three uncertain tiles, one per cluster, off their centres
    features[[5, 40, 70]] += 1.0
    few = get_strategy("hybrid").select(
        PoolScores(scores={"entropy": entropy}, features=features, labelled_features=features[:1]), 3, np.random.default_rng(0))
    many = get_strategy("hybrid").select(
        PoolScores(scores={"entropy": entropy}, features=features, labelled_features=features[:40]), 3, np.random.default_rng(0))
    assert sorted(many.tolist()) == [5, 40, 70]  # 40 labels: all by uncertainty, one per cluster
    assert len(set(few.tolist()) & {5, 40, 70}) <= 1  # one label: typical tiles first
    # and the uncertainty picks follow the scores given: inverted scores, other tiles
    inverted = get_strategy("hybrid").select(
        PoolScores(scores={"entropy": 1 - entropy}, features=features, labelled_features=features[:40]), 3,
        np.random.default_rng(0))
    assert not set(inverted.tolist()) & {5, 40, 70}


def test_hybrid_batch_is_spread_over_clusters_not_the_top_scores():
    rng = np.random.default_rng(9)
    features = _clusters(rng, [0.0, 8.0], 30)
    entropy = rng.uniform(0.1, 0.3, 60)
    entropy[:5] = rng.uniform(0.9, 0.95, 5)  # the most uncertain tiles all lie in cluster 0
    entropy[30:35] = rng.uniform(0.8, 0.85, 5)  # the next ones in cluster 1
    pool = PoolScores(scores={"entropy": entropy}, features=features, labelled_features=features[:25])
    assert {int(i) // 30 for i in get_strategy("entropy").select(pool, 2, _rng())} == {0}
    picked = get_strategy("hybrid").select(pool, 2, np.random.default_rng(0))
    assert {int(i) // 30 for i in picked} == {0, 1} and entropy[picked].min() >= 0.8


def test_a_users_own_strategy_by_callable_and_import_path():
    def lowest_entropy(pool, n, rng):
        return np.argsort(pool.scores["entropy"])[:n]

    spec = get_strategy(lowest_entropy)
    assert spec.select is lowest_entropy and spec.needs == "entropy" and spec.needs_features
    assert get_strategy("al_loop.query.strategies:coreset_selection").select.__name__ == "coreset_selection"
    with pytest.raises(ValueError, match="cannot import"):
        get_strategy("al_loop.query.strategies:nothing_here")


# -- al_loop.select on plain arrays -----------------------------------------------------------------


def test_select_on_arrays_takes_the_uncertain_tiles():
    import al_loop

    rng = np.random.default_rng(10)
    probs = np.where(rng.random((12, 16, 16)) > 0.5, 0.99, 0.01)
    probs[[3, 7]] = 0.5  # two tiles the model cannot decide
    assert sorted(al_loop.select(probs, 2).tolist()) == [3, 7]
    classes = np.stack([1 - probs, probs * 0.5, probs * 0.5], axis=1)  # (N, K+1, H, W), two types
    assert sorted(al_loop.select(classes, 2, strategy="margin").tolist()) == [3, 7]


def test_select_on_arrays_with_embeddings_and_a_users_function():
    import al_loop

    rng = np.random.default_rng(11)
    probs = rng.random((60, 8, 8))
    embeddings = _clusters(rng, [0.0, 10.0], 30)
    picked = al_loop.select(probs, 2, strategy="coreset", embeddings=embeddings)
    assert {int(i) // 30 for i in picked} == {0, 1}
    grids = rng.normal(size=(60, 4, 3, 3))  # raw (N, C, h, w) grids are pooled to (N, 2C)
    assert len(al_loop.select(probs, 4, strategy="typiclust", embeddings=grids, rng=1)) == 4

    def most_pit(pool, n, rng):
        return np.argsort(-pool.features[:, 0])[:n]

    assert al_loop.select(probs, 1, strategy=most_pit, embeddings=embeddings).tolist() == [int(np.argmax(embeddings[:, 0]))]
    with pytest.raises(ValueError, match="pass embeddings"):
        al_loop.select(probs, 2, strategy="coreset")
    with pytest.raises(ValueError, match="need more than one prediction"):
        al_loop.select(probs, 2, strategy="bald")
