import numpy as np

from al_loop.data.images import DecodedTile
from al_loop.models.filterbank import FilterbankEncoder


def _tile(pixels):
    return DecodedTile("mem", pixels, "0" * 64)


def test_shape_like_sam_embedding_and_finite():
    img = np.random.default_rng(0).integers(0, 255, (300, 451), dtype=np.uint8)
    emb = FilterbankEncoder().encode(_tile(img))
    assert emb.shape == (42, 64, 64) and emb.dtype == np.float32 and np.isfinite(emb).all()
    # non-square tile: cells below the scaled tile are padding (zeros), like SAM's frame
    assert np.all(emb[:, 50:, :] == 0) and np.any(emb[:, :40, :] != 0)


def test_a_dark_pit_changes_its_cells_only():
    base = np.full((512, 512), 150, np.uint8)
    pit = base.copy()
    yy, xx = np.mgrid[:512, :512]
    pit[(yy - 256) ** 2 + (xx - 256) ** 2 < 30**2] = 20
    e0, e1 = FilterbankEncoder().encode(_tile(base)), FilterbankEncoder().encode(_tile(pit))
    diff = np.abs(e1 - e0).sum(axis=0)
    assert diff[32, 32] > 0.1  # the pit's cell
    assert diff[2, 2] < 1e-4  # far away: unchanged


def test_16bit_and_rgb_inputs():
    grey16 = (np.random.default_rng(1).random((128, 128)) * 4000 + 500).astype(np.uint16)
    rgb = np.random.default_rng(2).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    for pixels in (grey16, rgb):
        assert FilterbankEncoder().encode(_tile(pixels)).shape == (42, 64, 64)


def test_registry_shape_matches_the_encoder():
    from al_loop.models.encoders import ENCODERS

    spec = ENCODERS["filterbank"]
    assert (spec.grid, spec.channels) == (FilterbankEncoder.grid, FilterbankEncoder.channels)
