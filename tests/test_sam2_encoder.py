"""SAM 2.1 as the domain decoder's encoder (``--encoder sam2.1-hiera_t``): its checkpoint in the
official format (random weights: none can be downloaded here), cache keys of its own, ``al-loop
embed`` storing the model's own embedding, torch as its engine, and box masks equal to the
model's. tests/test_sam2.py checks the model itself against SAM 2's SAM2ImagePredictor."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from al_loop.data.images import as_rgb8, read_image
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.models.encoders import LazyEncoder, build_encoder, encoder_id
from al_loop.models.sam2 import build_sam2

from .conftest import cli_here, write_tiles


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny_random.pt"
    torch.save({"model": build_sam2("hiera_t", None, seed=4).state_dict()}, path)
    return str(path)


def test_sam2_has_cache_keys_of_its_own_and_runs_on_torch(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("AL_LOOP_RUNTIME_CACHE", str(tmp_path / "runtimes"))
    ours = encoder_id("sam2.1-hiera_t", checkpoint)
    assert ours.startswith("sam2.1-hiera_t-") and ours != encoder_id("sam2.1-hiera_s", checkpoint)
    assert ours != encoder_id("sam-vit_t", checkpoint)  # the same file named as MobileSAM: another id
    encoder = LazyEncoder("sam2.1-hiera_t", checkpoint)
    assert (encoder.runtime, encoder.precision, encoder.grid, encoder.channels) == ("torch", "fp32", 64, 256)
    assert encoder_id("sam2.1-hiera_t", checkpoint, precision="bf16") == f"{ours}-bf16"


def test_embed_stores_the_models_embedding_and_box_masks_are_the_models(checkpoint, tmp_path):
    tiles = write_tiles(tmp_path / "tiles", 2, size=300)
    cache_dir = tmp_path / "cache"
    env = {**os.environ, "AL_LOOP_RUNTIME_CACHE": str(tmp_path / "runtimes")}
    done = cli_here("embed", str(tmp_path / "tiles"), "--encoder", "sam2.1-hiera_t", "--checkpoint", checkpoint,
                    "--cache-dir", str(cache_dir), env=env)
    assert done.returncode == 0, done.stderr
    model = build_sam2("hiera_t", checkpoint)
    tile = read_image(tiles[0])
    expected = model.features(as_rgb8(tile.pixels))
    cached = np.asarray(EmbeddingCache(cache_dir).load(tile.sha256, encoder_id("sam2.1-hiera_t", checkpoint)),
                        np.float32)
    assert cached.shape == (256, 64, 64)
    cosine = float(cached.ravel() @ expected.embedding.ravel()
                   / (np.linalg.norm(cached) * np.linalg.norm(expected.embedding)))
    assert cosine >= 0.9999  # float16 in the cache
    encoder = build_encoder("sam2.1-hiera_t", checkpoint)
    embedding = encoder.encode(tile)
    box = (40.0, 60.0, 200.0, 220.0)
    masks = encoder.box_masks(embedding, tile.size, [box])
    assert masks.shape == (1, 300, 300)
    assert np.array_equal(masks[0], model.predict(expected, tile.size, box=np.asarray(box))[0][0])
