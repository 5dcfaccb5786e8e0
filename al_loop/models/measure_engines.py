"""Measuring the engines an encoder can run on: a fixed probe tile on each engine and precision
installed, each in a child process (conversions included), against torch fp32. What
:mod:`al_loop.models.engines` chooses from; ``al-loop weights prepare`` runs it."""
from __future__ import annotations

import json
import multiprocessing
import resource
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from al_loop.errors import WeightsError
from al_loop.models.engines import REFERENCE, Measurement, has_native_bf16, model_of, write_record
from al_loop.models.runtimes import EXTRAS, SUPPORTED
from al_loop.models.weights import verify

PROBE_SEED = 7  # the probe tile: a generated Mars-like tile with pits, the same on every machine


def candidates() -> list[tuple[str, str, str | None]]:
    """(runtime, precision, why not measured or None) for every pair al-loop builds."""
    import importlib.util

    found = []
    for runtime, precision in SUPPORTED:
        module = {"openvino": "openvino", "onnx": "onnxruntime"}.get(runtime)
        if module and importlib.util.find_spec(module) is None:
            found.append((runtime, precision, f'not installed (pip install -e ".[{EXTRAS[runtime]}]")'))
        elif precision == "bf16" and not has_native_bf16():
            found.append((runtime, precision, "no native bf16 on this CPU (emulated bf16 measured 12-17x slower)"))
        else:
            found.append((runtime, precision, None))
    return [REFERENCE + (None,)] + [c for c in found if c[:2] != REFERENCE]


def measure(encoder: str, checkpoint: str | None, model_id: str, progress=print,
            only: set[tuple[str, str]] | None = None) -> list[Measurement]:
    """Every candidate on the probe (or those in ``only``; torch fp32, the reference, always),
    each in a child process; the record written. Returns the measurements, torch fp32's first.
    The official checkpoint is checked against the weights table first (a damaged or replaced file
    is a WeightsError naming it, before minutes are spent measuring it)."""
    verify(model_of(encoder), checkpoint)
    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="al-loop-engines-") as work:
        reference = Path(work) / "reference.npz"
        for runtime, precision, skipped in candidates():
            if only is not None and (runtime, precision) not in only | {REFERENCE}:
                continue
            if skipped:
                measurements.append(Measurement(runtime, precision, skipped=skipped))
                continue
            progress(f"al-loop: measuring {model_id} on {runtime} {precision} (once on this machine)")
            measurements.append(_in_child(encoder, checkpoint, runtime, precision, reference, Path(work)))
            if not reference.is_file():
                raise WeightsError(f"torch fp32 could not encode the probe for {model_id}: {measurements[-1].skipped}")
    write_record(model_id, measurements)
    return measurements


def _in_child(encoder: str, checkpoint: str | None, runtime: str, precision: str, reference: Path,
              work: Path) -> Measurement:
    out = work / f"{runtime}-{precision}.json"
    child = multiprocessing.get_context("spawn").Process(
        target=_measure_one, args=(encoder, checkpoint, runtime, precision, str(reference), str(out)))
    child.start()
    child.join()
    if child.exitcode != 0 or not out.is_file():
        return Measurement(runtime, precision, skipped=f"failed (exit code {child.exitcode})")
    return Measurement(**json.loads(out.read_text()))


def _measure_one(encoder_name: str, checkpoint: str | None, runtime: str, precision: str, reference: str,
                 out: str) -> None:
    """In a child process: build, convert if needed, time the probe, compare with the reference."""
    import warnings

    warnings.simplefilter("ignore")  # the exporters' tracer warnings, once per conversion, say nothing here
    try:
        measurement = _measure_here(encoder_name, checkpoint, runtime, precision, Path(reference))
    except Exception as exc:  # noqa: BLE001 - a candidate that fails is recorded, not fatal
        measurement = Measurement(runtime, precision, skipped=f"failed: {exc}"[:300])
    Path(out).write_text(json.dumps(asdict(measurement)))


def _measure_here(encoder_name: str, checkpoint: str | None, runtime: str, precision: str,
                  reference: Path) -> Measurement:
    from al_loop.models.encoders import build_encoder

    tile, boxes = probe_tile()
    encoder = build_encoder(encoder_name, checkpoint, precision, runtime)
    embedding = encoder.encode(tile)  # warm-up, and the conversion when there is one
    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        encoder.encode(tile)
        seconds.append(time.perf_counter() - started)
    # SAM 2.1's prompts take its three maps; SAM's its embedding.
    prompt_input = encoder.features(tile) if hasattr(encoder, "encode_maps") else embedding
    masks = encoder.box_masks(prompt_input, tile.size, boxes)
    conversion = getattr(getattr(encoder, "_image_encoder", None), "agreement", {}) or {}
    cosine = iou = 1.0
    if (runtime, precision) == REFERENCE:
        np.savez(reference, embedding=embedding, masks=masks)
    else:
        expected = np.load(reference)
        cosine = _cosine(embedding, expected["embedding"])
        iou = float(np.mean([_iou(a, b) for a, b in zip(masks, expected["masks"], strict=False)]))
    return Measurement(runtime, precision, float(np.median(seconds)), cosine, iou, conversion.get("seconds"),
                       resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def probe_tile():
    """A 1024-px generated tile with pits, and their boxes: the same probe on every machine."""
    from al_loop.data.images import DecodedTile
    from al_loop.data.synthetic import generate_tile

    generated = generate_tile(PROBE_SEED, size=1024, max_pits=3)
    tile = DecodedTile("probe", generated.image, f"probe-seed{PROBE_SEED}")
    return tile, [tuple(float(v) for v in box) for box in generated.boxes]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
