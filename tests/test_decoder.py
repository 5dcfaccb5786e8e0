import numpy as np
import pytest
import torch

from al_loop.models.decoder import DomainDecoder, load_decoder, predict_frames, predict_tile, save_decoder
from al_loop.models.geometry import frame_target
from al_loop.training.train import TrainingSet, train_decoder


def test_three_transposed_conv_upsampling_layers():
    d = DomainDecoder(256)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convs) == 3 and all(c.stride == (2, 2) for c in convs)
    out = predict_frames(d, np.zeros((2, 256, 64, 64), np.float32))
    assert out.shape == (2, 512, 512) and (out >= 0).all() and (out <= 1).all()  # sigmoid


def test_cell_path_equals_full_forward():
    torch.manual_seed(0)
    d = DomainDecoder(12).eval()
    grid = torch.randn(1, 12, 3, 3)
    full = d(grid)[0, 0].reshape(3, 8, 3, 8).permute(0, 2, 1, 3).reshape(9, 8, 8)
    cells = d.forward_cells(grid[0].reshape(12, -1).T)
    assert torch.allclose(full, cells, atol=1e-5)


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
    for emb, mask in zip(embs, masks):
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


def test_save_load_keeps_encoder_id(tmp_path):
    data, embs, _ = _synthetic_set(2)
    dec = train_decoder(data, epochs=2, progress=False)
    path = save_decoder(dec, tmp_path / "round-1.pt", "filterbank-v1", round=1)
    loaded, meta = load_decoder(path, "filterbank-v1")
    assert meta == {"encoder_id": "filterbank-v1", "round": 1}
    assert np.allclose(predict_frames(dec, embs[0][None]), predict_frames(loaded, embs[0][None]))
    with pytest.raises(ValueError, match="trained on embeddings of 'filterbank-v1'"):
        load_decoder(path, "sam-vit_b-01ec64")


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
