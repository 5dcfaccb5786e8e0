import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from al_loop.errors import AlLoopError
from al_loop.models.card import SCHEMA, DecoderCard
from al_loop.models.decoder import (
    DomainDecoder,
    class_probabilities,
    load_decoder,
    predict_frames,
    predict_tile,
    predict_tile_classes,
    save_decoder,
)
from al_loop.models.geometry import frame_target
from al_loop.training.train import TrainingSet, train_decoder


def test_three_transposed_conv_upsampling_layers():
    d = DomainDecoder(256)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convs) == 3 and all(c.stride == (2, 2) for c in convs)
    out = predict_frames(d, np.zeros((2, 256, 64, 64), np.float32))
    assert out.shape == (2, 512, 512) and (out >= 0).all() and (out <= 1).all()  # sigmoid


@pytest.mark.parametrize("types", [1, 5])
def test_cell_path_equals_full_forward(types):
    torch.manual_seed(0)
    d = DomainDecoder(12, types=types).eval()
    grid = torch.randn(1, 12, 3, 3)
    full = d(grid)[0].reshape(types, 3, 8, 3, 8).permute(1, 3, 0, 2, 4).reshape(9, types, 8, 8)
    cells = d.forward_cells(grid[0].reshape(12, -1).T)
    assert cells.shape == (9, types, 8, 8)
    assert torch.allclose(full, cells, atol=1e-5)


def test_one_type_is_the_sigmoid_of_its_logit():
    """Background's logit is fixed at 0: with one type the softmax is exactly the binary sigmoid."""
    logits = torch.randn(2, 1, 4, 4) * 5
    probs = class_probabilities(logits)
    assert torch.allclose(probs[:, 1], torch.sigmoid(logits[:, 0]), atol=1e-6)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2, 4, 4))


def _synthetic_set(n, seed=0, grid=16, size=(100, 140)):
    """Embeddings whose channel 0 says 'pit here' (plus noise); masks to match."""
    rng = np.random.default_rng(seed)
    data, masks, embs = TrainingSet(), [], []
    for _ in range(n):
        mask = np.zeros(size, bool)
        y, x = rng.integers(10, size[0] - 40), rng.integers(10, size[1] - 40)
        mask[y : y + 30, x : x + 30] = True
        emb = rng.normal(0, 0.3, (6, grid, grid)).astype(np.float32)
        small = frame_target(mask, grid)[0]
        emb[0] += 3 * small
        data.add(emb, mask)
        masks.append(mask)
        embs.append(emb)
    return data, embs, masks


def test_training_learns_and_maps_back_to_tile_size():
    data, _, _ = _synthetic_set(8)
    dec = train_decoder(data, epochs=60, seed=0, progress=False)
    _, embs, masks = _synthetic_set(4, seed=1)
    ious = []
    for emb, mask in zip(embs, masks, strict=False):
        prob = predict_tile(dec, emb, mask.shape)
        assert prob.shape == mask.shape
        pred = prob >= 0.5
        ious.append((pred & mask).sum() / (pred | mask).sum())
    assert np.mean(ious) > 0.5


def test_deterministic_for_a_seed():
    data, _, _ = _synthetic_set(3)
    a = train_decoder(data, epochs=5, seed=7, progress=False)
    b = train_decoder(data, epochs=5, seed=7, progress=False)
    c = train_decoder(data, epochs=5, seed=8, progress=False)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_negative_tiles_train_too():
    """A tile labelled 'no pit here' is a real negative: the decoder learns to say no."""
    emb = np.random.default_rng(0).normal(size=(4, 8, 8)).astype(np.float32)
    data = TrainingSet()
    data.add(emb, np.zeros((50, 50), bool))
    dec = train_decoder(data, epochs=100, progress=False)
    assert predict_frames(dec, emb[None]).mean() < 0.1


def test_empty_training_set_is_refused():
    with pytest.raises(ValueError, match="no labelled tiles"):
        train_decoder(TrainingSet(), progress=False)


def test_save_load_keeps_encoder_id_and_the_card(tmp_path):
    data, embs, _ = _synthetic_set(2)
    dec = train_decoder(data, epochs=2, progress=False)
    card = DecoderCard("filterbank-v1", "filterbank", version="round-1", type_names=["pit"], trained_on=[3, 1],
                       metrics={"miou": 0.5}, tiles=2, epochs=2, pit_sizes={"count": 2}, extra={"round": 1})
    path = save_decoder(dec, tmp_path / "round-1.pt", card)
    loaded, again = load_decoder(path, "filterbank-v1")
    # the writer stamps time and versions; everything else comes back as written
    assert again.created is not None and set(again.versions) == {"al_loop", "torch"}
    assert replace(again, created=None, versions={}) == card and again.schema == SCHEMA
    assert np.allclose(predict_frames(dec, embs[0][None]), predict_frames(loaded, embs[0][None]))
    with pytest.raises(ValueError, match="trained on embeddings of 'filterbank-v1'"):
        load_decoder(path, "sam-vit_b-01ec64")


def _old_blob(dec, **meta):
    """A decoder file as al-loop wrote it before cards: an untyped ``meta`` dict."""
    return {"state_dict": dec.state_dict(), "in_channels": dec.in_channels, "hidden": list(dec.hidden),
            "dropout": dec.dropout_p, "types": dec.types, "class_weights": list(dec.class_weights),
            "encoder_id": "filterbank-v1", "meta": meta}


def test_an_old_decoder_file_is_read_through_the_migration(tmp_path):
    data, _, _ = _synthetic_set(2)
    dec = train_decoder(data, epochs=2, progress=False)
    # what `al-loop train` saved: held-out figures under "held_out"
    torch.save(_old_blob(dec, version="dataset-pits", encoder="filterbank", checkpoint=None, precision="fp32", tiles=18,
                         epochs=10, oracle="box", dataset="/d/pits", type_names=["pit", "skylight"],
                         trained_on=["/d/a.png"], held_out={"tiles": ["/d/b.png"], "metrics": {"iou_pit": 0.4}},
                         pit_sizes=None, radiometry={"kind": "matched", "mean": 90.0, "sd": 20.0}, tile_side=256),
               tmp_path / "dataset.pt")
    _, card = load_decoder(tmp_path / "dataset.pt")
    assert (card.encoder, card.version, card.dataset, card.tile_side) == ("filterbank", "dataset-pits", "/d/pits", 256)
    assert card.validated_on == ["/d/b.png"] and card.metrics == {"iou_pit": 0.4} and card.schema == SCHEMA
    assert card.as_dict()["held_out"] == {"tiles": ["/d/b.png"], "metrics": {"iou_pit": 0.4}}
    # what a workspace round saved: "evaluation" and "saved_at", and a key the card does not know
    torch.save(_old_blob(dec, version="round-2", encoder="filterbank", precision="fp32", trained_on=[4, 2],
                         validated_on=[9], evaluation={"miou": 0.7}, saved_at=1.5e9, round_note="x"),
               tmp_path / "round-2.pt")
    _, card = load_decoder(tmp_path / "round-2.pt", "filterbank-v1")
    assert (card.metrics, card.created, card.trained_on, card.extra) == ({"miou": 0.7}, 1.5e9, [4, 2],
                                                                         {"round_note": "x"})
    assert card.as_dict()["evaluation"] == {"miou": 0.7} and card.get("saved_at") == 1.5e9


@pytest.mark.parametrize(("card", "words"), [({"schema": 99, "encoder_id": "x"}, "schema 99"),
                                              ({"schema": SCHEMA, "encoder_id": "x", "bogus": 1}, "damaged"),
                                              ([1, 2, 3], "damaged")])
def test_a_damaged_or_future_card_is_one_line_naming_the_file(tmp_path, card, words):
    dec = DomainDecoder(4)
    blob = {**_old_blob(dec), "card": card}
    del blob["meta"]
    torch.save(blob, tmp_path / "odd.pt")
    with pytest.raises(AlLoopError) as caught:
        load_decoder(tmp_path / "odd.pt")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'odd.pt'}: ") and words in message and "\n" not in message


def test_a_stores_cards_are_read_without_torch_and_old_sidecars_migrate(tmp_path):
    from al_loop.training.store import DecoderStore

    store = DecoderStore(tmp_path)
    data, _, _ = _synthetic_set(2)
    dec = train_decoder(data, epochs=2, progress=False)
    entry = store.save(dec, DecoderCard("filterbank-v1", "filterbank", version="round-1", trained_on=[5, 2],
                                        validated_on=[7], metrics={"miou": 0.6}))
    assert store.latest() == entry and store.card("round-1").trained_on == [2, 5]
    # a sidecar from before cards (record + pointer fields)
    (store.dir / "round-0.pt").write_bytes((store.dir / "round-1.pt").read_bytes())
    (store.dir / "round-0.json").write_text(json.dumps(
        {"version": "round-0", "trained_on": [1], "validated_on": [7], "evaluation": None, "saved_at": 1.0,
         "file": "round-0.pt", "encoder": "filterbank", "encoder_id": "filterbank-v1", "checkpoint": None,
         "precision": "fp32"}))
    rows = {r["version"]: r for r in store.records()}
    assert rows["round-0"]["evaluation"] is None and rows["round-0"]["trained_on"] == [1]
    assert rows["round-1"]["evaluation"] == {"miou": 0.6} and rows["round-1"]["latest"]
    assert store.set_latest(replace(entry, version="round-0", file="round-0.pt")) is False  # never scored


def test_mc_dropout_samples_differ():
    dec = DomainDecoder(6, dropout=0.3)
    x = np.random.default_rng(0).normal(size=(2, 6, 4, 4)).astype(np.float32)
    samples = predict_frames(dec, x, mc_samples=4)
    assert samples.shape == (4, 2, 32, 32)
    assert not np.allclose(samples[0], samples[1])
    assert not dec.training  # left in eval mode


def test_bf16_scoring_agrees_with_fp32():
    data, embs, _ = _synthetic_set(3)
    dec = train_decoder(data, epochs=20, progress=False)
    x = np.stack(embs)
    fp32 = predict_frames(dec, x, bf16=False)
    bf16 = predict_frames(dec, x, bf16=True)
    assert bf16.dtype == np.float32 and np.abs(fp32 - bf16).max() < 0.05


def _typed_set(n, seed=0, grid=16, size=(100, 140)):
    """Two pits per tile, one of each type: channel 0 says 'pit here', channel 1's sign says which type."""
    rng = np.random.default_rng(seed)
    data, items = TrainingSet(types=2), []
    for _ in range(n):
        labels = np.zeros(size, np.uint8)
        labels[10:40, 10:40] = 1
        x = rng.integers(60, size[1] - 35)
        labels[50:80, x : x + 30] = 2
        emb = rng.normal(0, 0.3, (6, grid, grid)).astype(np.float32)
        emb[0] += 3 * frame_target(labels > 0, grid)[0]
        emb[1] += 3 * frame_target(labels == 1, grid)[0] - 3 * frame_target(labels == 2, grid)[0]
        data.add(emb, labels)
        items.append((emb, labels))
    return data, items


def test_typed_decoder_learns_which_type_each_pit_is():
    data, _ = _typed_set(8)
    dec = train_decoder(data, epochs=60, seed=0, progress=False)
    assert dec.types == 2
    for emb, labels in _typed_set(3, seed=1)[1]:
        probs = predict_tile_classes(dec, emb, labels.shape)
        assert probs.shape == (3, *labels.shape) and np.allclose(probs.sum(axis=0), 1, atol=1e-4)
        predicted = probs.argmax(axis=0)
        for kind in (1, 2):
            inside = labels == kind
            assert (predicted[inside] == kind).mean() > 0.7, f"type {kind}"
        assert (predicted[labels == 0] == 0).mean() > 0.9


def test_rarer_types_weigh_more_in_the_loss():
    from al_loop.training.train import TYPE_WEIGHT_RANGE, class_weights

    weights = class_weights(np.array([100.0, 300.0, 0.0]), pit_weight=3.0)
    assert weights[0] == 1.0 and weights[3] == 3.0  # background, and a type never labelled
    assert weights[1] == pytest.approx(3.0 * 2.0) and weights[2] == pytest.approx(3.0 * 2 / 3)
    assert class_weights(np.array([1.0, 1e6]), 3.0)[1] == 3.0 * TYPE_WEIGHT_RANGE[1]  # clipped
    assert class_weights(np.array([5.0]), 3.0) == [1.0, 3.0]  # one type: BCE's pos_weight


def test_a_mask_of_an_unknown_type_is_refused():
    with pytest.raises(ValueError, match="types 1..2"):
        TrainingSet(types=2).add(np.zeros((4, 8, 8), np.float32), np.full((20, 20), 3, np.uint8))


def test_decoder_saved_before_types_loads_as_one_type(tmp_path):
    """A workspace's decoder from before pit types (no 'types' in the file) is the K = 1 case."""
    data, embs, _ = _synthetic_set(2)
    dec = train_decoder(data, epochs=2, progress=False)
    blob = {"state_dict": dec.state_dict(), "in_channels": dec.in_channels, "hidden": list(dec.hidden),
            "dropout": dec.dropout_p, "encoder_id": "filterbank-v1", "meta": {"round": 1}}
    torch.save(blob, tmp_path / "old.pt")
    loaded, card = load_decoder(tmp_path / "old.pt", "filterbank-v1")
    assert loaded.types == 1 and card.extra["round"] == 1
    assert np.allclose(predict_frames(dec, embs[0][None]), predict_frames(loaded, embs[0][None]))


def test_one_training_recipe_whose_defaults_are_the_settings():
    """`al-loop train` without flags, train_from_dataset from Python and the experiment train with
    the same recipe: the settings' defaults (precision None: the engine measured for the machine)."""
    from pathlib import Path

    from al_loop.mapping.from_dataset import DatasetTraining
    from al_loop.settings import resolve
    from al_loop.training.fit import TrainingRecipe

    defaults = TrainingRecipe.of(resolve({}, {}, {}))
    assert DatasetTraining(Path("d")).recipe == TrainingRecipe() == defaults
    assert defaults.precision is None and defaults.epochs == 100 and defaults.encoder == "filterbank"
