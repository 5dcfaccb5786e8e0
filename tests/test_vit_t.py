"""MobileSAM (``sam-vit_t``) wherever an encoder is taken: the backend's smart boxes against
SamPredictor, OpenVINO and ONNX Runtime against torch, its own cache keys, ``train`` and ``map``,
and the pinned checkpoint download. Random weights saved in the official format (no weights
can be downloaded here); tests/test_mobilesam.py checks the architecture against upstream's."""
from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from functools import partial

import numpy as np
import pytest
import torch

from al_loop.data import sample_products as sp
from al_loop.data.images import read_image
from al_loop.models.encoders import SamEncoder, encoder_id
from al_loop.models.runtimes import EXACT_COSINE
from al_loop.models.sam import load_sam, random_sam
from al_loop.studio.regions import brush_to_mask

from .conftest import write_tiles


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("vit_t") / "mobile_sam_random.pt"
    torch.save(random_sam("vit_t", seed=3).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tile(tmp_path_factory):
    return read_image(write_tiles(tmp_path_factory.mktemp("vit_t-tile"), 1, size=240)[0])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_vit_t_has_cache_keys_of_its_own(checkpoint, tmp_path):
    vit_b = tmp_path / "b.pth"
    vit_b.write_bytes(b"not used: the id is a hash of the file")
    ids = {encoder_id("sam-vit_t", checkpoint), encoder_id("sam-vit_b", vit_b),
           encoder_id("sam-vit_t", checkpoint, "bf16", "torch"), encoder_id("sam-vit_t", checkpoint, "fp32", "torch")}
    assert len(ids) == 3  # fp32 on torch is the default here or the same key as it: exact runtimes share one
    assert all(i.startswith("sam-vit_t-") for i in ids if "vit_b" not in i)


def test_the_backends_smart_box_on_vit_t_is_sam_predictors_mask(checkpoint, tmp_path):
    from segment_anything import SamPredictor

    from ml_backend.app import create_app
    from ml_backend.service import SegmentationService
    from ml_backend.settings import BackendSettings

    from .test_backend import CONFIG, box_context

    write_tiles(tmp_path / "tiles", 1, size=240)
    settings = BackendSettings.resolve(model="vit_t", checkpoint=str(checkpoint), cache_dir=str(tmp_path / "cache"),
                                       local_root=str(tmp_path / "tiles"), workspace=str(tmp_path / "ws"))
    client = create_app(SegmentationService(settings)).test_client()
    assert client.get("/health").json["sam"].startswith("sam-vit_t-")
    body = {"tasks": [{"id": 1, "data": {"image": "tile-000.png"}}], "label_config": CONFIG,
            "params": {"context": box_context()}}
    reply = client.post("/predict", json=body)
    assert reply.status_code == 200, reply.json
    (region,) = reply.json["results"][0]["result"]
    mask = brush_to_mask(region) > 0
    sam, _ = load_sam("vit_t", checkpoint)
    predictor = SamPredictor(sam)
    pixels = read_image(tmp_path / "tiles" / "tile-000.png").pixels
    predictor.set_image(np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels)
    x0, y0, x1, y1 = 0.20 * 240, 0.25 * 240, 0.50 * 240, 0.60 * 240
    reference, _, _ = predictor.predict(box=np.array([x0, y0, x1, y1]), multimask_output=False)
    inside = np.zeros_like(mask)
    inside[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = True  # the backend keeps a box's mask in its box
    expected = reference[0] & inside
    iou = (mask & expected).sum() / max(1, (mask | expected).sum())
    assert iou >= 0.99, iou


@pytest.mark.parametrize("runtime, module", [("openvino", "openvino"), ("onnx", "onnxruntime")])
def test_vit_t_on_a_runtime_gives_torch_fp32_embeddings(runtime, module, checkpoint, tile, tmp_path, monkeypatch):
    pytest.importorskip(module, reason=f'the {runtime} runtime is an extra: pip install -e ".[{runtime}]" (CI has it)')
    monkeypatch.setenv("AL_LOOP_RUNTIME_CACHE", str(tmp_path / "converted"))
    sam, model_id = load_sam("vit_t", checkpoint)
    reference = SamEncoder(sam, model_id, runtime="torch").encode(tile)
    encoder = SamEncoder(sam, model_id, runtime=runtime)
    embedding = encoder.encode(tile)
    assert embedding.shape == reference.shape == (256, 64, 64)
    assert encoder.id == model_id and cosine(embedding, reference) >= EXACT_COSINE
    assert encoder._image_encoder.agreement["exact"]


def run(*args, cwd, env):
    return subprocess.run([sys.executable, "-m", "al_loop.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **env})


def test_train_and_map_with_vit_t(checkpoint, tmp_path):
    from al_loop.data.synthetic import generate_tile, write_yolo_dataset

    dataset = write_yolo_dataset(tmp_path / "set", train=3, valid=1, seed=5, size=256)
    env = {"AL_LOOP_CACHE_DIR": str(tmp_path / "cache"), "AL_LOOP_RUNTIME": "torch"}
    trained = run("train", "--dataset", dataset, "--encoder", "sam-vit_t", "--checkpoint", checkpoint, "--epochs", "5",
                  "--held-out", "0", "--out", tmp_path / "d.pt", "--quiet", cwd=tmp_path, env=env)
    assert trained.returncode == 0, trained.stderr
    assert "encoder sam-vit_t-" in trained.stdout
    pixels = sp.mosaic([generate_tile(i, 256).image for i in range(2)], columns=2, null_corner=False)
    product = sp.write_geotiff(pixels, tmp_path / "P.tif", sp.equirectangular_wkt(0.0, 20.0), (0.0, 0.0), 0.25)
    mapped = run("map", product, "--decoder", tmp_path / "d.pt", "--out",  # the decoder names its checkpoint
                 tmp_path / "pits.gpkg", "--no-quicklook", "--quiet", cwd=tmp_path, env=env)
    assert mapped.returncode == 0, mapped.stderr
    assert (tmp_path / "pits.gpkg").is_file() and "P:" in mapped.stdout
    embedded = {p.parent.name for p in (tmp_path / "cache").rglob("*.npy")} | \
        {p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()}
    assert any("vit_t" in name for name in embedded), embedded


@pytest.fixture
def file_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(http.server.SimpleHTTPRequestHandler,
                                                                      directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_weights_download_vit_t_checks_the_pinned_sha256(file_server, tmp_path):
    root, url = file_server
    (root / "mobile_sam.pt").write_bytes(b"not MobileSAM" * 100)
    result = run("weights", "download", "vit_t", cwd=tmp_path,
                 env={"AL_LOOP_WEIGHTS_URL": url, "AL_LOOP_WEIGHTS_DIR": str(tmp_path / "w")})
    assert result.returncode != 0 and "has sha256" in result.stderr and "6dbb90523a35" in result.stderr
    assert not list((tmp_path / "w").glob("mobile_sam*")), "a file that failed its check is not kept"

