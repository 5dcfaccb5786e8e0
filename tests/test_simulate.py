import json

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
    # first round is random in both strategies: same seed, same first tiles
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


def test_uncertainty_picks_the_most_uncertain(synthetic_dataset, tmp_path):
    """The tiles chosen in round 2 carry the highest scores the pool had."""
    config = SimulationConfig(dataset=synthetic_dataset, steps=[3, 6], strategies=["entropy"], seeds=1, epochs=10)
    rows = run_simulation(config, EmbeddingCache(tmp_path / "c"), progress=False)
    chosen = rows[1]["chosen_scores"]
    assert len(chosen) == 3 and chosen == sorted(chosen, reverse=True)


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
    assert rows[-1]["object_recall"] > 0.05 and rows[-1]["miou"] > 0.5


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
