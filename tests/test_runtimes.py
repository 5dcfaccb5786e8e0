"""SAM's image encoder on OpenVINO and ONNX Runtime (issue 17, first part): the same
embeddings as torch fp32 where a combination promises it, a converted model made once and
rebuilt when the weights change, and a clear error when a runtime is missing."""
from __future__ import annotations

import builtins

import numpy as np
import pytest

from al_loop.data.images import read_image
from al_loop.errors import InstallError, UsageError
from al_loop.models.encoders import SamEncoder, build_encoder, encoder_id
from al_loop.models.runtimes import EXACT_COSINE, Conversion, check_runtime, runtime_cache_id
from al_loop.models.sam import build_tiny_sam

from .conftest import write_tiles


@pytest.fixture
def runtime_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AL_LOOP_RUNTIME_CACHE", str(tmp_path / "converted"))
    return tmp_path / "converted"


@pytest.fixture(scope="module")
def tile(tmp_path_factory):
    return read_image(write_tiles(tmp_path_factory.mktemp("runtime-tile"), 1, size=300)[0])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("runtime, module", [("openvino", "openvino"), ("onnx", "onnxruntime")])
def test_fp32_on_a_runtime_gives_torch_fp32_embeddings_under_its_key(runtime, module, runtime_cache, tile):
    pytest.importorskip(module, reason=f'the {runtime} runtime is an extra: pip install -e ".[{runtime}]" (CI has it)')
    sam = build_tiny_sam()
    torch_embedding = SamEncoder(sam, "sam-tiny-seed0").encode(tile)
    encoder = SamEncoder(sam, "sam-tiny-seed0", runtime=runtime)
    assert encoder.id == "sam-tiny-seed0"  # exact: the same cache entries as torch fp32
    embedding = encoder.encode(tile)
    assert embedding.shape == torch_embedding.shape and cosine(embedding, torch_embedding) >= EXACT_COSINE
    assert np.abs(embedding - torch_embedding).max() < 1e-3
    record = encoder._image_encoder.agreement
    assert record["exact"] and record["cosine"] >= EXACT_COSINE


def test_approximate_combinations_get_keys_of_their_own(runtime_cache, tile):
    pytest.importorskip("onnxruntime")
    assert runtime_cache_id("sam-vit_b-01ec64", "torch", "bf16") == "sam-vit_b-01ec64-bf16"  # as before
    assert runtime_cache_id("sam-vit_b-01ec64", "openvino", "bf16") == "sam-vit_b-01ec64-openvino-bf16"
    encoder = build_encoder("sam-tiny", precision="int8", runtime="onnx")
    assert encoder.id == "sam-tiny-seed0-onnx-int8" == encoder_id("sam-tiny", precision="int8", runtime="onnx")
    assert encoder.encode(tile).shape == (32, 16, 16)
    assert encoder._image_encoder.agreement["exact"] is False


def test_the_converted_model_is_made_once_and_rebuilt_for_other_weights(runtime_cache, tile, capsys):
    pytest.importorskip("onnxruntime")
    sam = build_tiny_sam()
    SamEncoder(sam, "sam-tiny-seed0", runtime="onnx").encode(tile)
    assert "converting sam-tiny-seed0" in capsys.readouterr().err
    folder = Conversion("onnx", "sam-tiny-seed0", "fp32", 256).folder
    made = (folder / "encoder.onnx").stat().st_mtime_ns
    SamEncoder(sam, "sam-tiny-seed0", runtime="onnx").encode(tile)
    assert "converting" not in capsys.readouterr().err and (folder / "encoder.onnx").stat().st_mtime_ns == made
    # Other weights (a checkpoint with another hash gives another id): converted anew, kept apart.
    other = build_tiny_sam(seed=1)
    SamEncoder(other, "sam-tiny-seed1", runtime="onnx").encode(tile)
    assert "converting sam-tiny-seed1" in capsys.readouterr().err
    assert len(list(runtime_cache.glob("onnx-*/*/agreement.json"))) == 2


def test_a_missing_runtime_or_precision_is_a_clear_error(runtime_cache, monkeypatch, tile):
    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("no openvino here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(InstallError, match=r'pip install -e "\.\[openvino\]"'):
        SamEncoder(build_tiny_sam(), "sam-tiny-seed0", runtime="openvino")
    with pytest.raises(UsageError, match="offers precision fp32, int8, not 'bf16'"):
        check_runtime("onnx", "bf16")
    with pytest.raises(UsageError, match="unknown runtime 'tensorrt'"):
        check_runtime("tensorrt", "fp32")


PROMPTS = [
    {"box": (40.0, 50.0, 200.0, 220.0)},
    {"points": np.array([[150.0, 140.0]]), "point_labels": np.array([1])},
    {"points": np.array([[150.0, 140.0], [60.0, 250.0]]), "point_labels": np.array([1, 0])},
    {"box": (40.0, 50.0, 200.0, 220.0), "points": np.array([[120.0, 130.0]]), "point_labels": np.array([0])},
]


@pytest.mark.parametrize("runtime, module", [("openvino", "openvino"), ("onnx", "onnxruntime")])
def test_the_prompt_decoder_on_a_runtime_gives_sam_predictors_masks(runtime, module, runtime_cache, tile):
    pytest.importorskip(module, reason=f'the {runtime} runtime is an extra: pip install -e ".[{runtime}]" (CI has it)')
    from al_loop.models.sam import PromptSegmenter

    sam = build_tiny_sam()
    embedding = SamEncoder(sam, "sam-tiny-seed0").encode(tile)
    on_torch, on_runtime = PromptSegmenter(sam), PromptSegmenter(sam, "sam-tiny-seed0", runtime)
    assert on_runtime.decoder is not None
    for prompt in PROMPTS:
        expected = on_torch.segment(embedding, tile.size, clip=False, **prompt)
        got = on_runtime.segment(embedding, tile.size, clip=False, **prompt)
        # The same mask, but for a pixel whose logit sits at the threshold within float rounding.
        assert (expected.mask != got.mask).mean() <= 1e-4, prompt
        assert got.score == pytest.approx(expected.score, abs=1e-4)


def test_embed_on_onnx_fills_the_same_entries_as_torch(runtime_cache, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    from al_loop.cli import main
    from al_loop.embeddings.cache import EmbeddingCache

    monkeypatch.delenv("AL_LOOP_RUNTIME", raising=False)
    folder = tmp_path / "tiles"
    write_tiles(folder, 2, size=200)
    assert main(["embed", str(folder), "--encoder", "sam-tiny", "--runtime", "onnx", "--cache-dir", str(tmp_path / "c")]) == 0
    assert "2 encoded" in capsys.readouterr().out
    # torch fp32 finds them cached: one cache for every exact runtime.
    assert main(["embed", str(folder), "--encoder", "sam-tiny", "--runtime", "torch", "--cache-dir", str(tmp_path / "c")]) == 0
    assert "0 encoded, 2 already cached" in capsys.readouterr().out
    assert len(list(EmbeddingCache(tmp_path / "c").root.glob("sam-tiny-seed0/v*/*/*/*.npy"))) == 2


def test_two_processes_converting_at_once_leave_one_whole_model(runtime_cache, tile):
    pytest.importorskip("onnxruntime")
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(2) as pool:
        results = pool.map(_convert_in_child, [str(runtime_cache)] * 2)
    assert results[0] == results[1]  # the same embedding from whichever folder won
    folders = [p for p in (runtime_cache).glob("onnx-*/*") if p.is_dir()]
    assert [p.name for p in folders] == ["sam-tiny-seed0-fp32"]  # no staging folder left behind
    assert (folders[0] / "agreement.json").is_file() and (folders[0] / "encoder.onnx").is_file()


def _convert_in_child(root: str) -> float:
    import os

    os.environ["AL_LOOP_RUNTIME_CACHE"] = root
    sam = build_tiny_sam()
    encoder = SamEncoder(sam, "sam-tiny-seed0", runtime="onnx")
    x = np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)
    from al_loop.data.images import DecodedTile

    return float(encoder.encode(DecodedTile("probe", x, "0" * 64)).sum())


def test_the_default_runtime_is_the_fastest_exact_one_on_a_cpu(monkeypatch):
    """No runtime named, fp32, no CUDA: OpenVINO when installed (measured 2.5x torch with torch's
    embeddings); approximate precisions and GPUs keep torch; a named runtime always wins; the
    prompt decoder stays on torch, which measured fastest per prompt."""
    import torch

    from al_loop.models.runtimes import default_prompt_runtime, default_runtime

    pytest.importorskip("openvino")
    monkeypatch.delenv("AL_LOOP_RUNTIME", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_runtime() == "openvino" and default_runtime("fp32") == "openvino"
    assert default_runtime("int8") == "torch" and default_runtime("bf16") == "torch"
    assert default_prompt_runtime() == "torch"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_runtime() == "torch"
    monkeypatch.setenv("AL_LOOP_RUNTIME", "onnx")
    assert default_runtime() == "onnx" and default_prompt_runtime() == "onnx"
