"""The engine an encoder runs on, chosen by measurement: the rule (fastest that keeps the
contract; a named runtime or precision wins), a real measurement in child processes on a
SAM with its conversions, and the plumbing from a machine's record to the encoder, its cache
key and what the backend's /health says."""
from __future__ import annotations

import json
import os

import pytest
import torch

from al_loop.models.encoders import LazyEncoder, model_id, resolve_engine
from al_loop.models.engines import (
    CONTRACT_COSINE,
    CONTRACT_MASK_IOU,
    Measurement,
    choose,
    cpu_summary,
    read_record,
    record_path,
    write_record,
)
from al_loop.models.measure_engines import measure
from al_loop.models.sam import random_sam

TORCH = Measurement("torch", "fp32", 8.0, 1.0, 1.0)
OPENVINO = Measurement("openvino", "fp32", 4.7, 1.0, 1.0)
OPENVINO_BF16 = Measurement("openvino", "bf16", 1.7, 0.99996, 0.990)  # the AMX machine's figures (issue 24)
TORCH_BF16 = Measurement("torch", "bf16", 4.8, 0.99997, 0.991)
ONNX_INT8 = Measurement("onnx", "int8", 1.2, 0.9990, 0.961)  # fast, but outside the contract
SKIPPED = Measurement("torch", "bf16", skipped="no native bf16 on this CPU")


def test_the_fastest_engine_that_keeps_the_contract_is_chosen():
    chosen = choose([TORCH, OPENVINO, OPENVINO_BF16, ONNX_INT8])
    assert (chosen.runtime, chosen.precision) == ("openvino", "bf16")
    assert "4.7x torch fp32" in chosen.reason and "mask IoU 0.990" in chosen.reason
    # Where bf16 is not native it is not measured, and fp32 on OpenVINO wins.
    chosen = choose([TORCH, SKIPPED, OPENVINO, ONNX_INT8])
    assert (chosen.runtime, chosen.precision) == ("openvino", "fp32")
    # Cosine or IoU under the contract rules an engine out, however fast.
    fast_but_off = Measurement("openvino", "bf16", 0.5, CONTRACT_COSINE - 1e-5, 0.999)
    assert choose([TORCH, fast_but_off]).precision == "fp32"
    assert not Measurement("onnx", "fp32", 1.0, 1.0, CONTRACT_MASK_IOU - 0.001).keeps_contract
    assert choose([SKIPPED]).reason == "nothing measured keeps the contract"


def test_a_named_runtime_or_precision_wins():
    measured = [TORCH, OPENVINO, OPENVINO_BF16, TORCH_BF16, ONNX_INT8]
    assert choose(measured, runtime="torch", precision="fp32").reason == "named"
    named_runtime = choose(measured, runtime="torch")  # the fastest within the contract on torch
    assert (named_runtime.runtime, named_runtime.precision) == ("torch", "bf16")
    named_precision = choose(measured, precision="fp32")
    assert (named_precision.runtime, named_precision.precision) == ("openvino", "fp32")
    # int8 named: the user's call on agreement, so it runs although it misses the contract.
    assert (choose(measured, precision="int8").runtime, choose(measured, precision="int8").precision) == ("onnx", "int8")
    assert choose([TORCH], runtime="onnx").runtime == "onnx"  # named, never measured: still named


@pytest.fixture
def runtime_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AL_LOOP_RUNTIME_CACHE", str(tmp_path / "runtimes"))
    monkeypatch.delenv("AL_LOOP_RUNTIME", raising=False)
    return tmp_path / "runtimes"


def test_a_measurement_runs_each_engine_in_its_own_process_against_torch_fp32(runtime_cache):
    """The tiny SAM on torch fp32 (the reference), ONNX Runtime fp32 (converted in its child) and
    int8: real timings, agreement and peaks, written where the encoders will read them."""
    pytest.importorskip("onnxruntime")
    lines = []
    measured = measure("sam-tiny", None, "sam-tiny-seed0", progress=lines.append,
                       only={("onnx", "fp32"), ("onnx", "int8")})
    by_engine = {(m.runtime, m.precision): m for m in measured}
    assert list(by_engine) == [("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8")]
    assert all(m.skipped is None and m.seconds > 0 and m.peak_rss_mb > 100 for m in measured), measured
    assert by_engine["onnx", "fp32"].cosine >= CONTRACT_COSINE and by_engine["onnx", "fp32"].mask_iou >= 0.99
    assert by_engine["onnx", "fp32"].conversion_seconds > 0  # converted in the child, not here
    assert by_engine["onnx", "int8"].cosine < 1.0  # approximate: measured, not assumed
    assert len(lines) == 3 and all("once on this machine" in line for line in lines)
    record = json.loads(record_path("sam-tiny-seed0").read_text())
    assert record["cpu"] == cpu_summary() and record["contract"] == {"cosine": CONTRACT_COSINE, "mask_iou": 0.98}
    assert read_record("sam-tiny-seed0") == measured


@pytest.fixture(scope="module")
def vit_t_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("engines") / "mobile_sam_random.pt"
    torch.save(random_sam("vit_t", seed=5).state_dict(), path)
    return str(path)


def test_the_encoder_runs_on_the_recorded_choice_and_its_cache_key_says_so(runtime_cache, vit_t_checkpoint):
    weights = model_id("sam-vit_t", vit_t_checkpoint)
    unmeasured = resolve_engine("sam-vit_t", vit_t_checkpoint)
    assert "not measured on this machine yet (al-loop weights prepare vit_t)" in unmeasured.reason
    write_record(weights, [TORCH, OPENVINO, ONNX_INT8])
    encoder = LazyEncoder("sam-vit_t", vit_t_checkpoint)
    assert (encoder.runtime, encoder.precision) == ("openvino", "fp32")
    assert encoder.id == weights  # exact: torch fp32's cache key, shared by every exact engine
    write_record(weights, [TORCH, OPENVINO, Measurement("onnx", "int8", 1.0, 0.99995, 0.99)])
    encoder = LazyEncoder("sam-vit_t", vit_t_checkpoint)
    assert (encoder.runtime, encoder.precision) == ("onnx", "int8") and encoder.id == f"{weights}-onnx-int8"
    named = LazyEncoder("sam-vit_t", vit_t_checkpoint, precision="fp32", runtime="torch")
    assert (named.runtime, named.precision, named.engine.reason, named.id) == ("torch", "fp32", "named", weights)
    # The tests' SAM and the filter bank are never measured: the rule, said as such.
    assert "a test model" in resolve_engine("sam-tiny").reason
    assert "no engines" in resolve_engine("filterbank").reason


def test_the_backend_says_which_engine_runs_and_why(runtime_cache, vit_t_checkpoint, tmp_path):
    from ml_backend.app import create_app
    from ml_backend.service import SegmentationService
    from ml_backend.settings import BackendSettings

    # torch int8 recorded as keeping the contract: chosen, and nothing to convert in this test.
    write_record(model_id("sam-vit_t", vit_t_checkpoint), [TORCH, Measurement("torch", "int8", 2.0, 0.99995, 0.99)])
    settings = BackendSettings.resolve(model="vit_t", checkpoint=vit_t_checkpoint, cache_dir=str(tmp_path / "cache"),
                                       workspace=str(tmp_path / "ws"))
    health = create_app(SegmentationService(settings)).test_client().get("/health").get_json()
    assert health["engine"]["runtime"] == "torch" and health["engine"]["precision"] == "int8"
    assert "fastest measured that keeps the contract" in health["engine"]["reason"]
    assert health["engine"]["cpu"] == cpu_summary()


def test_a_conversion_runs_in_a_child_process_and_records_its_peak(runtime_cache):
    """A backend worker or Ray actor never holds a conversion's peak (9 GB for vit_b on OpenVINO)."""
    pytest.importorskip("onnxruntime")
    from al_loop.models.encoders import build_encoder

    encoder = build_encoder("sam-tiny", precision="fp32", runtime="onnx")
    agreement = encoder._image_encoder.agreement
    assert agreement["pid"] != os.getpid() and agreement["peak_rss_mb"] > 100 and agreement["cosine"] >= CONTRACT_COSINE


# -- the checkpoint table: every official file with its published hash, checked on download and by prepare --


def test_every_official_checkpoint_is_in_one_table_with_a_published_hash():
    from al_loop.models.weights import CHECKPOINTS
    from al_loop.settings import OFFICIAL_MODELS

    assert set(CHECKPOINTS) == set(OFFICIAL_MODELS)
    for name, ck in CHECKPOINTS.items():
        assert len(ck.sha256) == 64 and int(ck.sha256, 16) >= 0 and "micro-sam" in ck.published_by, name
        assert ck.source.startswith("https://") and ck.source.endswith(ck.filename)
        if ck.md5_prefix:  # SAM's file names carry their md5's first digits: still checked
            assert ck.md5_prefix in ck.filename
    # the names in cache ids do not move with the table (embeddings cached before stay valid)
    assert [CHECKPOINTS[m].tag for m in ("vit_b", "vit_t", "sam2.1-hiera_t")] == ["01ec64", "6dbb90", "092824"]


@pytest.fixture
def served(tmp_path):
    """A fake checkpoint on a real local HTTP server: (its bytes, the base URL, where downloads go)."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler

    from .conftest import serving

    root = tmp_path / "served"
    root.mkdir()
    payload = os.urandom(1 << 16) + b"pretend checkpoint"
    (root / "fake.pt").write_bytes(payload)
    with serving(partial(SimpleHTTPRequestHandler, directory=str(root))) as url:
        yield payload, url, tmp_path / "weights"


def test_a_download_with_the_wrong_sha256_is_refused_and_nothing_is_kept(served):
    import hashlib

    from al_loop.errors import WeightsError
    from al_loop.models.weights import Checkpoint, download

    payload, url, dest = served
    wrong = Checkpoint("vit_t", "fake.pt", "", 1, sha256="0" * 64, published_by="a test")
    with pytest.raises(WeightsError, match=r"has sha256 [0-9a-f]{12}\.\.\., expected 000000000000\.\.\. "
                                           r"\(published by a test\); the file was discarded") as refused:
        download("vit_t", dest, base_url=url, checkpoint=wrong)
    assert "fake.pt" in str(refused.value) and "\n" not in str(refused.value)
    assert not list(dest.iterdir()), "nothing partial may pose as a checkpoint"
    right = Checkpoint("vit_t", "fake.pt", "", 1, sha256=hashlib.sha256(payload).hexdigest(), size_bytes=len(payload))
    assert download("vit_t", dest, base_url=url, checkpoint=right).read_bytes() == payload
    assert [p.name for p in dest.iterdir()] == ["fake.pt"]
    (dest / "fake.pt").unlink()
    short = Checkpoint("vit_t", "fake.pt", "", 1, sha256=right.sha256, size_bytes=len(payload) + 1)
    with pytest.raises(WeightsError, match=f"is {len(payload)} bytes, expected {len(payload) + 1}"):
        download("vit_t", dest, base_url=url, checkpoint=short)
    assert not list(dest.iterdir())


def test_a_checkpoint_with_no_published_hash_records_the_one_it_arrived_with(served, capsys):
    import hashlib

    from al_loop.models.weights import Checkpoint, download

    payload, url, dest = served
    path = download("vit_t", dest, base_url=url, checkpoint=Checkpoint("vit_t", "fake.pt", "", 1))
    digest = hashlib.sha256(payload).hexdigest()
    assert (dest / "fake.pt.sha256").read_text().split() == [digest, "fake.pt"] and path.read_bytes() == payload
    assert digest in capsys.readouterr().err


def test_prepare_refuses_a_damaged_official_checkpoint_before_measuring(tmp_path, monkeypatch):
    from al_loop.errors import WeightsError
    from al_loop.models.weights import CHECKPOINTS

    monkeypatch.setenv("AL_LOOP_WEIGHTS_DIR", str(tmp_path))
    damaged = tmp_path / CHECKPOINTS["vit_t"].filename
    damaged.write_bytes(b"\x00" * 4096)
    with pytest.raises(WeightsError, match=rf"{damaged} has sha256 .* not the official vit_t checkpoint"):
        measure("sam-vit_t", None, "sam-vit_t-6dbb90", progress=lambda line: pytest.fail(f"measured: {line}"))
