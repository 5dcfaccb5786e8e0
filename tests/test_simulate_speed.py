"""The simulation's speed-ups measure what the plain loop measured: seeds in parallel processes,
round 1 shared by a seed's strategies, the pool's pooled embeddings kept, and the decoder run
cell by cell for scoring give the figures of the straightforward way (issue 38's speed target)."""
import numpy as np
import pytest
import torch

from al_loop.embeddings.cache import EmbeddingCache
from al_loop.experiment.simulate import SimulationConfig, prepare_run, run_one, run_seed, run_simulation
from al_loop.models.decoder import DomainDecoder, predict_class_frames
from al_loop.query.pool import PooledFeatures, class_frames, score_pool


def _figures(rows: list[dict]) -> list[dict]:
    """Rows without the keys that are lists, keyed for comparison."""
    return [{k: v for k, v in r.items() if k not in ("chosen_scores",)} for r in rows]


def test_seeds_in_parallel_processes_give_the_serial_figures(synthetic_dataset, tmp_path):
    config = SimulationConfig(dataset=synthetic_dataset, steps=[3, 6], strategies=["hybrid", "random"], seeds=2,
                              epochs=5)
    cache = EmbeddingCache(tmp_path / "c")
    serial = run_simulation(config, cache, progress=False, workers=1)
    parallel = run_simulation(config, cache, progress=False, workers=2)
    assert [(r["strategy"], r["seed"], r["round"]) for r in parallel] == [
        (s, seed, k) for s in ("hybrid", "random") for seed in (0, 1) for k in (1, 2)]
    assert _figures(parallel) == _figures(serial)
    for a, b in zip(parallel, serial, strict=True):
        assert a["chosen_scores"] == pytest.approx(b["chosen_scores"], rel=1e-6)
    # the seeds differ (random's second round draws other tiles): the processes did not all run seed 0
    assert parallel[5]["labelled_tiles"] != parallel[7]["labelled_tiles"]


def test_a_seeds_shared_round_one_changes_no_strategys_rounds(synthetic_dataset, tmp_path):
    """Each strategy run alone (its own round 1) and all of a seed's strategies from one shared
    round 1 give the same rows."""
    config = SimulationConfig(dataset=synthetic_dataset, steps=[3, 6, 9], strategies=["typiclust", "coreset", "entropy"],
                              seeds=1, epochs=5)
    run = prepare_run(config, EmbeddingCache(tmp_path / "c"), progress=False)
    shared = list(run_seed(run, config.strategies, 1))
    alone = [row for strategy in config.strategies for row in run_one(run, strategy, 1)]
    assert _figures(shared) == _figures(alone)
    # the strategies did pick differently after round 1, so the shared start is not hiding anything
    assert len({tuple(r["labelled_tiles"]) for r in shared if r["round"] == 3}) > 1


def test_scoring_cell_by_cell_is_the_decoders_own_prediction():
    torch.manual_seed(3)
    decoder = DomainDecoder(12, types=3)
    decoder.mean.uniform_(-1, 1)
    decoder.std.uniform_(0.5, 2)
    embeddings = np.random.default_rng(0).normal(size=(3, 12, 8, 8)).astype(np.float32)
    fast = class_frames(decoder, embeddings)
    assert fast.shape == (3, 4, 64, 64)
    np.testing.assert_allclose(fast, predict_class_frames(decoder, embeddings, bf16=False), atol=1e-6)
    assert not decoder.training


def test_kept_pooled_features_are_the_ones_scoring_computes(synthetic_dataset, tmp_path):
    config = SimulationConfig(dataset=synthetic_dataset, steps=[3], seeds=1, epochs=1)
    cache = EmbeddingCache(tmp_path / "c")
    run = prepare_run(config, cache, progress=False)
    refs = run.train.refs[:7]
    computed = score_pool(None, refs, cache, run.encoder_id, features=True, progress=False).features
    kept = PooledFeatures(cache, run.encoder_id)
    assert kept(refs[2:5]).shape == (3, computed.shape[1])
    from_kept = score_pool(None, refs, cache, run.encoder_id, features=True, progress=False, pooled=kept).features
    np.testing.assert_array_equal(from_kept, computed)


def test_a_sam_oracle_and_its_cache_cross_into_the_worker_processes(synthetic_dataset, tmp_path):
    """Workers start fresh (never forked from this many-threaded process) and get the run
    pickled: the SAM oracle rebuilds its model there and the cache reopens its folder."""
    import pickle

    cache = EmbeddingCache(tmp_path / "c")
    assert pickle.loads(pickle.dumps(cache)).root == cache.root
    config = SimulationConfig(dataset=synthetic_dataset, steps=[3, 5], strategies=["entropy", "random"],
                              encoder="sam-tiny", oracle="sam", model="tiny", seeds=2, epochs=3)
    serial = run_simulation(config, cache, progress=False, workers=1)
    parallel = run_simulation(config, cache, progress=False, workers=2)
    assert _figures(parallel) == _figures(serial)
