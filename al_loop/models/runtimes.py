"""SAM's image encoder on a CPU inference engine: OpenVINO or ONNX Runtime instead of torch eager.

A runtime converts the frozen image encoder once and keeps the converted model on disk,
keyed by the weights' id (which names the checkpoint), the precision and the runtime's
version; a change in any of them converts again. Agreement is part of the contract:
combinations declared *exact* (fp32 on any runtime) share torch fp32's cache key, and
each conversion is checked against torch on a fixed input (cosine >= :data:`EXACT_COSINE`)
before it is used, so embeddings from different engines mix only when they are the same
numbers. Other combinations (bf16, int8) are *approximate* and get keys of their own.
The runtimes are optional extras (``pip install -e ".[openvino]"`` / ``".[onnx]"``).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from al_loop.errors import InstallError, UsageError, WeightsError
from al_loop.settings import RUNTIMES, from_environment, local_path  # RUNTIMES: the parser offers the same names

EXACT_COSINE = 0.9999  # below this, a runtime's embedding is not torch fp32's
# (runtime, precision) pairs that are built, and whether they promise torch fp32's numbers.
SUPPORTED = {
    ("torch", "fp32"): True, ("torch", "bf16"): False, ("torch", "int8"): False,
    ("openvino", "fp32"): True, ("openvino", "bf16"): False,
    ("onnx", "fp32"): True, ("onnx", "int8"): False,
}
EXTRAS = {"openvino": "openvino", "onnx": "onnx"}  # the pyproject extra that brings each runtime


def default_runtime(precision: str = "fp32") -> str:
    """The image encoder's engine when none is named: ``$AL_LOOP_RUNTIME``; else, for fp32 on a
    machine without CUDA, OpenVINO when it is installed, the fastest runtime measured that
    gives torch fp32's numbers (2.5x torch eager for vit_b, ``bench/encoder_runtimes.py``);
    else torch (a GPU, or bf16/int8, which keep the engines they had)."""
    named = from_environment("runtime")
    if named:
        return named
    if precision == "fp32" and not torch.cuda.is_available() and importlib.util.find_spec("openvino") is not None:
        return "openvino"
    return "torch"


def default_prompt_runtime() -> str:
    """The prompt decoder's engine when none is named: ``$AL_LOOP_RUNTIME``, else torch. Per box
    prompt torch eager measured fastest (59 ms against OpenVINO's 68 and ONNX Runtime's 71):
    the exported decoder is small and the upscaling stays in torch either way."""
    return from_environment("runtime") or "torch"


def check_runtime(runtime: str, precision: str) -> None:
    """A UsageError for a runtime or a precision the runtime does not offer."""
    if runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if (runtime, precision) not in SUPPORTED:
        offered = ", ".join(p for r, p in SUPPORTED if r == runtime)
        raise UsageError(f"the {runtime} runtime offers precision {offered}, not {precision!r}")


def is_exact(runtime: str, precision: str) -> bool:
    return SUPPORTED.get((runtime, precision), False)


def runtime_cache_id(model_id: str, runtime: str, precision: str) -> str:
    """The embedding-cache id: torch fp32's for exact combinations, one of its own otherwise
    (torch keeps its older ``<id>-<precision>`` names)."""
    check_runtime(runtime, precision)
    if is_exact(runtime, precision):
        return model_id
    return f"{model_id}-{precision}" if runtime == "torch" else f"{model_id}-{runtime}-{precision}"


def runtime_version(runtime: str) -> str:
    # OpenVINO's reads "2026.4.1-22982-<commit>-releases/2026/4": the release number is enough.
    return _module(runtime).__version__.split("-")[0]


def _module(runtime: str):
    try:
        if runtime == "openvino":
            import openvino

            return openvino
        import onnxruntime

        return onnxruntime
    except ImportError:
        raise InstallError(
            f'the {runtime} runtime is not installed: pip install -e ".[{EXTRAS[runtime]}]"'
        ) from None


def converted_root() -> Path:
    """Where converted encoders and engine measurements live: ``$AL_LOOP_RUNTIME_CACHE`` or
    ``~/.cache/al-loop/runtimes`` (the setting ``runtime_cache``)."""
    return local_path("runtime_cache")


@dataclass(frozen=True)
class Conversion:
    """Where one converted encoder lives: runtime and version, weights, precision."""

    runtime: str
    model_id: str
    precision: str
    input_size: int
    part: str = "encoder"  # "encoder" (the image encoder) or "prompt" (prompt encoder + mask decoder)

    @property
    def folder(self) -> Path:
        kind = self.precision if self.part == "encoder" else "prompt-decoder"
        return converted_root() / f"{self.runtime}-{runtime_version(self.runtime)}" / f"{self.model_id}-{kind}"

    @property
    def model_file(self) -> Path:
        if self.part == "prompt":
            return self.folder / "prompt.onnx"  # both runtimes read segment-anything's ONNX export
        return self.folder / ("encoder.xml" if self.runtime == "openvino" else "encoder.onnx")


class CompiledImageEncoder:
    """SAM's image encoder (1, 3, S, S) -> (1, C, G, G) on OpenVINO or ONNX Runtime."""

    def __init__(self, image_encoder: torch.nn.Module, conversion: Conversion):
        self.conversion = conversion
        if not (conversion.folder / "agreement.json").is_file():
            convert_in_child(image_encoder, conversion)
        self._run = _load(conversion)
        self.agreement = json.loads((conversion.folder / "agreement.json").read_text())

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The encoder's output, or its outputs as a tuple where it has several (SAM 2.1's three maps)."""
        outputs = [torch.from_numpy(np.asarray(o)) for o in self._run(x.numpy().astype(np.float32))]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def convert_in_child(image_encoder: torch.nn.Module, conversion: Conversion) -> None:
    """Convert in a process of its own: tracing vit_b for OpenVINO peaks at 9 GB, which must not
    stay with a backend worker or a Ray actor (a process's peak is never given back). The
    child's peak is recorded with the agreement."""
    import multiprocessing

    print(f"al-loop: converting {conversion.model_id}'s image encoder to {conversion.runtime} "
          f"{conversion.precision} (once; kept in {conversion.folder})", file=sys.stderr)
    if multiprocessing.current_process().daemon:
        # A multiprocessing pool's worker may not start children: convert here, as before.
        _convert(image_encoder, conversion)
        return
    child = multiprocessing.get_context("spawn").Process(target=_convert, args=(image_encoder, conversion))
    child.start()
    child.join()
    if not (conversion.folder / "agreement.json").is_file():
        raise WeightsError(f"converting {conversion.model_id} to {conversion.runtime} {conversion.precision} failed "
                           f"(exit code {child.exitcode}; its error is above); run on the torch runtime meanwhile. "
                           "From a script of your own, call it under `if __name__ == '__main__':` (the conversion "
                           "runs in a child process, which imports your script again)")


def _convert(image_encoder: torch.nn.Module, conversion: Conversion) -> None:
    """Convert once and check agreement with torch, in a staging folder renamed into place when
    complete: two processes (two Ray actors) converting at once leave one whole folder."""
    import resource
    import warnings

    warnings.simplefilter("ignore")  # the tracer's warnings about SAM's shape arithmetic say nothing to a user
    started = time.perf_counter()
    staging = conversion.folder.with_name(f".{conversion.folder.name}.{os.getpid()}-{threading.get_ident()}")
    staging.mkdir(parents=True, exist_ok=True)
    try:
        record = _convert_into(image_encoder, conversion, staging / conversion.model_file.name)
        record.update(seconds=time.perf_counter() - started, pid=os.getpid(),
                      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        (staging / "agreement.json").write_text(json.dumps(record))
        with contextlib.suppress(OSError):  # another process finished first: its folder is as good as ours
            staging.rename(conversion.folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _convert_into(image_encoder: torch.nn.Module, conversion: Conversion, model_file: Path) -> dict:
    probe = _probe(conversion.input_size)
    with torch.inference_mode():
        expected = _outputs(image_encoder(probe))
    if conversion.runtime == "openvino":
        _convert_openvino(image_encoder, probe, model_file)
    else:
        _convert_onnx(image_encoder, probe, model_file, conversion.precision, len(expected))
    got = [np.asarray(o) for o in _load(conversion, model_file)(probe.numpy())]
    # The worst output decides: every map a prompt reads must be torch's.
    cosine = min(float(g.ravel() @ e.ravel() / (np.linalg.norm(g) * np.linalg.norm(e) + 1e-12))
                 for g, e in zip(got, expected, strict=False))
    exact = is_exact(conversion.runtime, conversion.precision)
    if exact and cosine < EXACT_COSINE:
        raise WeightsError(f"the {conversion.runtime} {conversion.precision} encoder disagrees with torch "
                           f"(cosine {cosine:.6f} < {EXACT_COSINE}); run on the torch runtime")
    return {"cosine": cosine, "max_abs": max(float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=False)), "exact": exact}


def _outputs(result) -> list[np.ndarray]:
    """An encoder's output(s) as a list of arrays."""
    return [t.numpy() for t in (result if isinstance(result, (tuple, list)) else (result,))]


def _probe(size: int) -> torch.Tensor:
    # A fixed input standing in for a normalised tile: the same check on every machine.
    return torch.from_numpy(np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32))


def _convert_openvino(image_encoder: torch.nn.Module, probe: torch.Tensor, model_file: Path) -> None:
    ov = _module("openvino")
    model = ov.convert_model(image_encoder, example_input=probe)
    ov.save_model(model, str(model_file), compress_to_fp16=False)


def _convert_onnx(image_encoder: torch.nn.Module, probe: torch.Tensor, model_file: Path, precision: str,
                  outputs: int = 1) -> None:
    _module("onnx")
    fp32 = model_file.with_suffix(".fp32.onnx") if precision == "int8" else model_file
    names = ["embedding"] + [f"high_res_{i}" for i in range(outputs - 1)]
    torch.onnx.export(image_encoder, (probe,), str(fp32), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=names)
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        try:
            quantize_dynamic(str(fp32), str(model_file), weight_type=QuantType.QInt8)
        except ValueError:
            # onnxruntime's dynamic quantiser cannot take some exported convolutions (TinyViT's:
            # "Expected ... to be an initializer"); the matmuls of attention and MLP, where the
            # time goes, quantise alone, as torch's int8 path does.
            quantize_dynamic(str(fp32), str(model_file), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"])


def _load(conversion: Conversion, model_file: Path | None = None):
    """A callable numpy (1, 3, S, S) -> the list of the converted model's outputs ((1, C, G, G) first)."""
    if conversion.part == "prompt":
        return _load_prompt(conversion)
    model_file = model_file or conversion.model_file
    if conversion.runtime == "openvino":
        ov = _module("openvino")
        hint = "bf16" if conversion.precision == "bf16" else "f32"
        compiled = ov.Core().compile_model(
            str(model_file), "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        )
        return lambda x: [value for value in compiled(x).values()]
    ort = _module("onnx")
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"image": x})


# -- the prompt decoder -------------------------------------------------------------------

PROMPT_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size")


class CompiledPromptDecoder:
    """SAM's prompt encoder + mask decoder from segment-anything's own ONNX export
    (``SamOnnxModel``, all four masks returned), run on OpenVINO or ONNX Runtime. Prompts are
    fed as SAM's ONNX example does (box corners as labels 2 and 3, a padding point when there
    is no box), and the mask is chosen as ``SamPredictor`` does, so the masks are its masks."""

    def __init__(self, sam, conversion: Conversion):
        self.sam, self.conversion = sam, conversion
        if not conversion.model_file.is_file():
            _export_prompt(sam, conversion)
        self._run = _load(conversion)

    def predict(self, embedding: np.ndarray, original_size: tuple[int, int], coords: np.ndarray | None,
                labels: np.ndarray | None, box: np.ndarray | None, multimask: bool) -> tuple[np.ndarray, np.ndarray]:
        """(masks (M, H, W) bool, scores (M,)) for prompts in the SAM frame (already transformed)."""
        points = np.zeros((0, 2), np.float32) if coords is None else np.asarray(coords, np.float32).reshape(-1, 2)
        point_labels = np.zeros(0, np.float32) if labels is None else np.asarray(labels, np.float32).ravel()
        if box is not None:
            points = np.concatenate([points, np.asarray(box, np.float32).reshape(2, 2)])
            point_labels = np.concatenate([point_labels, np.array([2, 3], np.float32)])
        else:
            points = np.concatenate([points, np.zeros((1, 2), np.float32)])
            point_labels = np.concatenate([point_labels, np.array([-1], np.float32)])
        grid = self.sam.prompt_encoder.image_embedding_size
        feeds = {
            "image_embeddings": np.asarray(embedding, np.float32)[None], "point_coords": points[None],
            "point_labels": point_labels[None], "mask_input": np.zeros((1, 1, 4 * grid[0], 4 * grid[1]), np.float32),
            "has_mask_input": np.zeros(1, np.float32), "orig_im_size": np.array(original_size, np.float32),
        }
        low_res, scores = self._run(feeds)
        chosen = slice(1, None) if multimask else slice(0, 1)  # what SamPredictor.predict returns
        # Upscaling stays in torch, SamPredictor's own code: the legacy ONNX export bakes the
        # example's image size into the crop, so the exported upscaling is only right for it.
        input_size = tuple(int(v) for v in _input_size(original_size, self.sam.image_encoder.img_size))
        with torch.inference_mode():
            masks = self.sam.postprocess_masks(torch.from_numpy(np.ascontiguousarray(low_res[:, chosen])), input_size,
                                               tuple(original_size))
        return (masks[0] > self.sam.mask_threshold).numpy(), scores[0, chosen]


def _export_prompt(sam, conversion: Conversion) -> None:
    from segment_anything.utils.onnx import SamOnnxModel

    print(f"al-loop: exporting {conversion.model_id}'s prompt decoder for {conversion.runtime} "
          f"(once; kept in {conversion.folder})", file=sys.stderr)
    conversion.folder.mkdir(parents=True, exist_ok=True)
    grid = sam.prompt_encoder.image_embedding_size
    dummy = (
        torch.randn(1, sam.prompt_encoder.embed_dim, *grid), torch.randint(0, 1024, (1, 5, 2)).float(),
        torch.randint(0, 4, (1, 5)).float(), torch.randn(1, 1, 4 * grid[0], 4 * grid[1]), torch.tensor([1.0]),
        torch.tensor([1500.0, 2250.0]),
    )
    tmp = conversion.model_file.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")  # threads export side by side
    torch.onnx.export(
        SamOnnxModel(sam, return_single_mask=False), dummy, str(tmp), opset_version=17, do_constant_folding=True,
        dynamo=False, input_names=list(PROMPT_INPUTS), output_names=["masks", "iou_predictions", "low_res_masks"],
        dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
    )
    tmp.replace(conversion.model_file)  # whole or absent: a killed export is redone


def _load_prompt(conversion: Conversion):
    """A callable feeds -> (masks, iou predictions) on the exported prompt decoder."""
    if conversion.runtime == "openvino":
        ov = _module("openvino")
        compiled = ov.Core().compile_model(str(conversion.model_file), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return lambda feeds: (lambda out: (out["low_res_masks"], out["iou_predictions"]))(compiled(feeds))
    ort = _module("onnx")
    session = ort.InferenceSession(str(conversion.model_file), providers=["CPUExecutionProvider"])
    return lambda feeds: tuple(session.run(["low_res_masks", "iou_predictions"], feeds))


def _input_size(original_size: tuple[int, int], long_side: int) -> tuple[int, int]:
    from segment_anything.utils.transforms import ResizeLongestSide

    return ResizeLongestSide.get_preprocess_shape(original_size[0], original_size[1], long_side)
