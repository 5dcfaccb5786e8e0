import json
from pathlib import Path

import numpy as np
import pytest
import torch

from al_loop.cli import main
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.experiment.simulate import SimulationConfig, run_simulation


def test_simulate_cli_synthetic_filterbank(synthetic_dataset, tmp_path, capsys):
    out_json, out_png = tmp_path / "sim.json", tmp_path / "curve.png"
    code = main([
        "simulate", "--dataset", str(synthetic_dataset), "--steps", "4,8,12", "--strategy", "entropy,random",
        "--encoder", "filterbank", "--oracle", "box", "--seeds", "2", "--epochs", "30",
        "--report", str(out_json), "--png", str(out_png), "--cache-dir", str(tmp_path / "cache"), "--quiet",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "object_recall" in printed and "mean over seeds" in printed
    payload = json.loads(out_json.read_text())
    rows = payload["rounds"]
    assert len(rows) == 2 * 2 * 3  # strategies x seeds x rounds
    for strategy in ("entropy", "random"):
        for seed in (0, 1):
            run = [r for r in rows if r["strategy"] == strategy and r["seed"] == seed]
            assert [r["labelled"] for r in run] == [4, 8, 12]
            tiles = run[-1]["labelled_tiles"]
            assert len(tiles) == len(set(tiles)) == 12  # nothing labelled twice
            assert run[0]["labelled_tiles"] == run[-1]["labelled_tiles"][:4]
    # the first round (typical tiles) is the same for both strategies of a seed
    first = {(r["strategy"], r["seed"]): r["labelled_tiles"] for r in rows if r["round"] == 1}
    assert first[("entropy", 0)] == first[("random", 0)]
    # generated pits are easy: the decoder must find some by the last round
    assert max(r["object_recall"] for r in rows if r["labelled"] == 12) > 0.3
    assert out_png.stat().st_size > 10_000
    assert {s["labelled"] for s in payload["summary"]} == {4, 8, 12}
    assert "minus random's, seed by seed" in printed
    paired = {d["labelled"]: d for d in payload["paired_vs_random"]}
    assert set(paired) == {4, 8, 12} and all(d["strategy"] == "entropy" and d["seeds"] == 2 for d in paired.values())
    assert paired[4]["mean"] == 0.0  # round 1 is the same random tiles for both


def test_paired_against_random_differences_within_each_seed():
    from al_loop.experiment.simulate import paired_against

    rows = [
        {"strategy": s, "seed": seed, "labelled": 15, "object_recall": r}
        for s, seed, r in [("random", 0, 0.10), ("random", 1, 0.40), ("random", 2, 0.25),
                           ("entropy", 0, 0.15), ("entropy", 1, 0.42), ("entropy", 2, 0.24)]
    ]
    (d,) = paired_against(rows)
    assert d["strategy"] == "entropy" and d["seeds"] == 3 and (d["wins"], d["losses"]) == (2, 1)
    assert d["mean"] == pytest.approx((0.05 + 0.02 - 0.01) / 3)
    assert d["se"] == pytest.approx(np.std([0.05, 0.02, -0.01], ddof=1) / np.sqrt(3))
    assert paired_against(rows, baseline="nope") == []


def test_round_two_takes_what_the_round_one_decoder_is_least_sure_of(synthetic_dataset, tmp_path):
    """Round 2's entropy picks are the top of the pool as the round-1 decoder, retrained here on the
    same tiles with the same seed, scores it: the strategy sees the decoder, not chance."""
    from al_loop.experiment.simulate import Run, _embedded_split, first_picks, load_splits, type_names
    from al_loop.models.encoders import LazyEncoder
    from al_loop.query.pool import score_pool
    from al_loop.training.fit import OracleMasks, train_on_tiles
    from al_loop.training.oracle import build_oracle

    config = SimulationConfig(dataset=synthetic_dataset, steps=[3, 6], strategies=["entropy"], seeds=1, epochs=10)
    cache = EmbeddingCache(tmp_path / "c")
    rows = run_simulation(config, cache, progress=False)
    train_tiles, eval_tiles, _ = load_splits(config, progress=False)
    encoder = LazyEncoder(config.encoder, None, config.precision, config.runtime)
    train = _embedded_split(train_tiles, encoder, cache, False)
    oracle = build_oracle("box", config.model, None, cache, None)
    masks = OracleMasks(oracle, train.tiles, 1)
    run = Run(config, train, _embedded_split(eval_tiles, encoder, cache, False), [], masks, cache, encoder.id, False,
              type_names(config))
    first = first_picks(run, 0)
    decoder = train_on_tiles(train, masks, first, types=1, encoder_id=encoder.id, cache=cache, recipe=config.recipe,
                             seed=0, progress=False)
    rest = [i for i in range(len(train.refs)) if i not in first]
    entropy = score_pool(decoder, [train.refs[i] for i in rest], cache, encoder.id, ["entropy"], progress=False).scores["entropy"]
    expected = {Path(train.refs[rest[j]].source).name for j in np.argsort(-entropy)[:3]}
    assert set(rows[1]["labelled_tiles"][3:]) == expected
    assert rows[1]["chosen_scores"] == pytest.approx(sorted(entropy, reverse=True)[:3], rel=1e-4)


def test_first_round_is_typical_not_random(synthetic_dataset, tmp_path):
    """Round 1 by TypiClust: the same tiles for every strategy of a seed, and not a random draw (with
    first_round="random" the seed's permutation decides, as before)."""
    cache = EmbeddingCache(tmp_path / "c")
    typical = run_simulation(SimulationConfig(dataset=synthetic_dataset, steps=[4], strategies=["entropy", "coreset"],
                                              seeds=1, epochs=2), cache, progress=False)
    drawn = run_simulation(SimulationConfig(dataset=synthetic_dataset, steps=[4], strategies=["entropy"], seeds=1, epochs=2,
                                            first_round="random"), cache, progress=False)
    assert typical[0]["labelled_tiles"] == typical[1]["labelled_tiles"]
    assert set(typical[0]["labelled_tiles"]) != set(drawn[0]["labelled_tiles"])
    with pytest.raises(ValueError, match="first round has no decoder"):
        SimulationConfig(dataset=synthetic_dataset, first_round="entropy").validate()


def test_every_round_records_the_decoders_agreement(synthetic_dataset, tmp_path):
    rows = run_simulation(SimulationConfig(dataset=synthetic_dataset, steps=[3, 6, 9], strategies=["random"], seeds=1,
                                           epochs=10), EmbeddingCache(tmp_path / "c"), progress=False)
    assert rows[0]["stop_kappa"] is None and rows[0]["stop_object_f1"] is None
    for row in rows[1:]:
        assert -1.0 <= row["stop_kappa"] <= 1.0 and 0.0 <= row["stop_object_f1"] <= 1.0
    # decoders trained on different tiles do not agree perfectly: the measure sees them change
    assert min(r["stop_kappa"] for r in rows[1:]) < 1.0


def test_summary_interval_and_the_stopping_summary():
    from scipy import stats

    from al_loop.experiment.simulate import paired_against, stopping_summary, summarise

    def row(strategy, seed, labelled, recall, kappa):
        return {"strategy": strategy, "seed": seed, "round": labelled // 5, "labelled": labelled,
                "object_recall": recall, "stop_kappa": kappa}

    rows = [row("random", s, 5 * r, 0.1 * r + 0.01 * s, None if r == 1 else 0.5) for s in range(3) for r in (1, 2, 3, 4, 5)]
    kappas = {1: None, 2: 0.95, 3: 0.995, 4: 0.996, 5: 0.999}  # fires at the fifth round (25 tiles) for seed 0
    rows += [row("typiclust", s, 5 * r, 0.1 * r + 0.02 * s, kappas[r] if s == 0 else 0.5)
             for s in range(3) for r in (1, 2, 3, 4, 5)]
    (mean,) = [m for m in summarise(rows, ["object_recall"]) if m["strategy"] == "random" and m["labelled"] == 10]
    values = [0.2, 0.21, 0.22]
    assert mean["object_recall"] == pytest.approx(0.21)
    assert mean["object_recall_ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / np.sqrt(3))
    (diff,) = [d for d in paired_against(rows) if d["labelled"] == 10]
    assert diff["mean"] == pytest.approx(0.01) and diff["ci95"][0] < 0.01 < diff["ci95"][1]
    stops = {(s["strategy"], s["seed"]): s for s in stopping_summary(rows, threshold=0.99, window=3)}
    assert stops[("typiclust", 0)]["stopped_at"] == 25 and stops[("typiclust", 0)]["tiles_saved"] == 0
    assert stops[("typiclust", 1)]["stopped_at"] is None and stops[("random", 0)]["stopped_at"] is None
    early = {(s["strategy"], s["seed"]): s for s in stopping_summary(rows, threshold=0.9, window=2)}
    assert early[("typiclust", 0)]["stopped_at"] == 15 and early[("typiclust", 0)]["tiles_saved"] == 10
    assert early[("typiclust", 0)]["object_recall_given_up"] == pytest.approx(0.5 - 0.3)


def test_simulate_tiny_sam_encoder_and_sam_oracle_never_train_the_encoder(synthetic_dataset, tmp_path, monkeypatch):
    from al_loop.models import sam as sam_module

    built = []
    original = sam_module.build_tiny_sam

    def spy(*a, **k):
        model = original(*a, **k)
        built.append((model, {n: p.detach().clone() for n, p in model.named_parameters()}))
        return model

    monkeypatch.setattr(sam_module, "build_tiny_sam", spy)
    config = SimulationConfig(
        dataset=synthetic_dataset, steps=[3, 5], strategies=["bald", "diverse"], encoder="sam-tiny",
        oracle="sam", model="tiny", seeds=1, epochs=5,
    )
    cache = EmbeddingCache(tmp_path / "c")
    rows = run_simulation(config, cache, progress=False)
    assert len(rows) == 4 and all(0 <= r["miou"] <= 1 for r in rows)
    assert built, "SAM was never loaded"
    for model, before in built:
        for name, p in model.named_parameters():
            assert torch.equal(p, before[name]), f"encoder weight {name} changed"
    # 24 train + 6 valid tiles, each encoded once although both encoder and oracle use SAM
    assert cache.stats.encodes == 30


def test_bad_steps_are_refused(synthetic_dataset, capsys):
    assert main(["simulate", "--dataset", str(synthetic_dataset), "--steps", "5,3", "--oracle", "box", "--quiet"]) == 2
    assert "increasing" in capsys.readouterr().err
    assert main(["simulate", "--dataset", str(synthetic_dataset), "--steps", "5,500", "--oracle", "box", "--quiet"]) == 2


@pytest.mark.hirise
def test_simulate_on_real_hirise(hirise, shared_cache, tmp_path):
    """Two short rounds on the real tiles: the filter-bank decoder finds real pits. The pool is the
    first 40 train tiles (linked, with the whole valid split): ranking all 405 cost CI 5.6 minutes
    of encoding, 120 still 2 minutes, and two rounds of five tiles ask nothing of the rest (round 2
    still ranks 35 unlabelled tiles). The embeddings go to the session's shared cache, where
    test_pit_types.py and the Label Studio loop tests find the same tiles' entries."""
    dataset = tmp_path / "subset"
    for split, count in (("train", 40), ("valid", None)):
        for sub in ("images", "labels"):
            (dataset / split / sub).mkdir(parents=True)
        for image in sorted((hirise / split / "images").iterdir())[:count]:
            (dataset / split / "images" / image.name).symlink_to(image)
            label = hirise / split / "labels" / f"{image.stem}.txt"
            if label.is_file():
                (dataset / split / "labels" / label.name).symlink_to(label)
    (dataset / "data.yaml").symlink_to(hirise / "data.yaml")
    config = SimulationConfig(dataset=dataset, steps=[5, 10], strategies=["entropy"], seeds=1, epochs=30)
    rows = run_simulation(config, EmbeddingCache(shared_cache), progress=False)
    assert [r["labelled"] for r in rows] == [5, 10]
    assert rows[-1]["objects_expert"] > 100  # valid split's expert boxes
    assert rows[-1]["object_recall"] > 0.05 and rows[-1]["iou_pit"] > 0.0  # a background-only decoder scores 0 on both


def test_a_data_sets_own_leaky_split_is_measured_and_regrouped(tmp_path, capsys):
    """Mirrored copies of train tiles planted in valid: simulate and train say so, --regroup mends it."""
    import shutil

    from PIL import Image, ImageOps

    from al_loop.cli import main
    from al_loop.data.synthetic import write_yolo_dataset
    from al_loop.experiment.simulate import SimulationConfig, load_splits

    root = write_yolo_dataset(tmp_path / "leaky", train=12, valid=4, seed=7, size=192)
    for i, image in enumerate(sorted((root / "train" / "images").iterdir())[:3]):
        copy = root / "valid" / "images" / f"copy-{i}{image.suffix}"
        ImageOps.mirror(Image.open(image)).save(copy)
        shutil.copy(root / "train" / "labels" / f"{image.stem}.txt", root / "valid" / "labels" / f"copy-{i}.txt")
    _, valid, check = load_splits(SimulationConfig(root), progress=False)
    assert (check.held_out, check.leaked) == (7, 3) and len(valid) == 7
    train, valid, check = load_splits(SimulationConfig(root, regroup=True), progress=False)
    assert check.leaked == 3 and check.leaked_after == 0 and len(train) + len(valid) == 19
    assert 6 <= len(valid) <= 8  # whole groups: about the size of the set's own valid split
    out = tmp_path / "d.pt"
    assert main(["train", "--dataset", str(root), "--out", str(out), "--epochs", "2", "--regroup", "--held-out", "0", "--quiet",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    said = capsys.readouterr().out
    assert "3 of the 7 held-out (other splits) tiles have a near-duplicate" in said
    assert "3 training tile(s) with a copy there left out" in said and "trained on 9 tiles" in said
