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
    assert "al-loop weights prepare sam2.1-hiera_t)" in encoder.engine.reason
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
    box = (40.0, 60.0, 200.0, 220.0)
    masks = encoder.box_masks(encoder.features(tile), tile.size, [box])
    assert masks.shape == (1, 300, 300)
    x0, y0, x1, y1 = 40, 60, 200, 220
    inside = np.zeros((300, 300), bool)
    inside[y0:y1, x0:x1] = True  # a box's mask is kept in its box, as the backend gives it
    assert np.array_equal(masks[0], model.predict(expected, tile.size, box=np.asarray(box))[0][0] & inside)


def test_the_backends_smart_box_on_sam2_is_sam2_image_predictors_mask(tmp_path):
    """--model sam2.1-hiera_t: a box in Label Studio's interactive call gives SAM2ImagePredictor's mask
    for the same checkpoint (clipped to the box, as every backend mask is), from one encoder pass
    whose three maps are cached: a second box on the tile encodes nothing."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from ml_backend.app import create_app
    from ml_backend.service import SegmentationService
    from ml_backend.settings import BackendSettings

    from .test_backend import CONFIG, box_context
    from .test_sam2 import reference_checkpoint

    reference, checkpoint = reference_checkpoint("hiera_t", tmp_path)
    (tile_path,) = write_tiles(tmp_path / "tiles", 1, size=240)
    settings = BackendSettings.resolve(model="sam2.1-hiera_t", checkpoint=str(checkpoint),
                                       cache_dir=str(tmp_path / "cache"), local_root=str(tmp_path / "tiles"),
                                       workspace=str(tmp_path / "ws"))
    service = SegmentationService(settings)
    client = create_app(service).test_client()
    assert client.get("/health").json["sam"].startswith("sam2.1-hiera_t-")
    body = {"tasks": [{"id": 1, "data": {"image": tile_path.name}}], "label_config": CONFIG,
            "params": {"context": box_context()}}
    reply = client.post("/predict", json=body)
    assert reply.status_code == 200, reply.json
    (region,) = reply.json["results"][0]["result"]
    from al_loop.studio.regions import brush_to_mask

    mask = brush_to_mask(region) > 0
    predictor = SAM2ImagePredictor(reference, disable_torch_jit=True)
    pixels = read_image(tile_path).pixels
    predictor.set_image(np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels)
    x0, y0, x1, y1 = 0.20 * 240, 0.25 * 240, 0.50 * 240, 0.60 * 240
    expected, _, _ = predictor.predict(box=np.array([x0, y0, x1, y1]), multimask_output=False)
    inside = np.zeros_like(mask)
    inside[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = True
    expected = expected[0].astype(bool) & inside
    iou = (mask & expected).sum() / max(1, (mask | expected).sum())
    assert iou >= 0.99, iou
    encoder_id = service.sam_encoder.id
    sha = read_image(tile_path).sha256
    assert all(EmbeddingCache(tmp_path / "cache").contains(sha, encoder_id + s) for s in ("", "+hr0", "+hr1"))
    encodes = service.cache.stats.encodes
    assert client.post("/predict", json=body).status_code == 200
    assert service.cache.stats.encodes == encodes  # the three maps came from the cache


@pytest.mark.slow
def test_train_and_map_with_sam2(checkpoint, tmp_path):
    """A decoder trained on SAM 2.1's embeddings maps a product with them (and names them)."""
    from al_loop.data import sample_products as sp
    from al_loop.data.synthetic import generate_tile, write_yolo_dataset

    dataset = write_yolo_dataset(tmp_path / "set", train=2, valid=1, seed=5, size=256)
    env = {**os.environ, "AL_LOOP_CACHE_DIR": str(tmp_path / "cache"),
           "AL_LOOP_RUNTIME_CACHE": str(tmp_path / "runtimes")}
    trained = cli_here(
        "train", "--dataset", str(dataset), "--encoder", "sam2.1-hiera_t", "--checkpoint", checkpoint, "--epochs", "3",
        "--held-out", "0", "--out", str(tmp_path / "d.pt"), "--quiet", env=env, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "encoder sam2.1-hiera_t-" in trained.stdout
    pixels = sp.mosaic([generate_tile(i, 256).image for i in range(2)], columns=2, null_corner=False)
    product = sp.write_geotiff(pixels, tmp_path / "P.tif", sp.equirectangular_wkt(0.0, 20.0), (0.0, 0.0), 0.25)
    mapped = cli_here("map", str(product), "--decoder", str(tmp_path / "d.pt"), "--out", str(tmp_path / "pits.gpkg"),
                      "--no-quicklook", "--quiet", env=env, cwd=tmp_path)
    assert mapped.returncode == 0, mapped.stderr
    assert (tmp_path / "pits.gpkg").is_file() and "P:" in mapped.stdout
    assert any(p.name.startswith("sam2.1-hiera_t-") for p in (tmp_path / "cache").iterdir())


def test_the_cli_sam_oracle_on_sam2_caches_the_three_maps_once(checkpoint, tmp_path):
    """Bare boxes in next-batch / --oracle sam with --model sam2.1-hiera_t: SAM 2.1's masks, from
    three maps cached as the backend caches them, so a later round encodes nothing."""
    from al_loop.embeddings.embed import TileRef
    from al_loop.models.encoders import Sam2Encoder
    from al_loop.training.masks import sam_masker

    (path,) = write_tiles(tmp_path / "tiles", 1, size=200)
    tile = read_image(path)
    cache = EmbeddingCache(tmp_path / "cache")
    masker = sam_masker(cache, lambda ref: read_image(ref.source), model="sam2.1-hiera_t", checkpoint=checkpoint)
    ref = TileRef(str(path), tile.sha256, tile.size)
    box = np.array([[30.0, 40.0, 150.0, 170.0]])
    (mask,) = masker(ref, box)
    ids = Sam2Encoder("sam2.1-hiera_t", checkpoint).map_ids
    assert all(cache.contains(tile.sha256, i) for i in ids) and cache.stats.encodes == 1
    expected = build_sam2("hiera_t", checkpoint).predict(
        build_sam2("hiera_t", checkpoint).features(as_rgb8(tile.pixels)), tile.size, box=box[0])[0][0]
    inside = np.zeros(tile.size, bool)
    inside[40:170, 30:150] = True
    expected &= inside
    iou = (mask & expected).sum() / max(1, (mask | expected).sum())
    assert iou >= 0.99, iou  # the cache keeps float16: a boundary pixel may differ
    assert np.array_equal(masker(ref, box)[0], mask) and cache.stats.encodes == 1  # from the cache


def test_sam2_on_onnx_runtime_gives_torch_fp32s_three_maps(checkpoint, tmp_path, monkeypatch):
    """SAM 2.1's image path converted (in a child) to ONNX Runtime: all three maps agree with torch
    fp32, so it shares fp32's cache key. OpenVINO goes through the same code (checked by hand:
    cosine >= 0.999999 on each map); not run here, its conversion takes CI 90 s."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("AL_LOOP_RUNTIME_CACHE", str(tmp_path / "runtimes"))
    (path,) = write_tiles(tmp_path / "tiles", 1, size=256)
    tile = read_image(path)
    reference = build_encoder("sam2.1-hiera_t", checkpoint, "fp32", "torch")
    converted = build_encoder("sam2.1-hiera_t", checkpoint, "fp32", "onnx")
    assert converted.id == reference.id and converted._compiled.agreement["cosine"] >= 0.9999
    expected, got = reference.features(tile), converted.features(tile)
    for a, b in ((got.embedding, expected.embedding), (got.high_res_0, expected.high_res_0),
                 (got.high_res_1, expected.high_res_1)):
        assert a.shape == b.shape
        assert float(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b))) >= 0.9999
