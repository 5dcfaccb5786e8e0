"""Which engine and precision run an image encoder: the fastest this machine allows, by measurement.

CPUs of one kind differ more than a rule can say: bf16 is 2.8x faster than fp32 on an Intel
with AMX and 17x slower on a Zen 3 with AVX2 only. So the choice is measured, once per
machine (CPU model and flags), weights and engine versions: every engine and precision
installed encodes one fixed probe tile, each in a process of its own (a process holding
OpenVINO and ONNX Runtime slowed torch by half, and a conversion peaks at 9 GB: neither
belongs in a backend worker), and is compared with torch fp32 on it. The fastest that keeps
the *contract* (embedding cosine >= :data:`CONTRACT_COSINE` and box-mask IoU >=
:data:`CONTRACT_MASK_IOU`) runs from then on. A named runtime or precision always wins.

The record lives beside the converted models (``<runtime cache>/choices/<machine>/<model id>.json``)
and says why: :func:`engine_for` returns the choice with its reason, which ``al-loop status``,
the backend's ``/health`` and the demo print.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from al_loop.models.runtimes import EXACT_COSINE, converted_root, default_runtime

CONTRACT_COSINE = EXACT_COSINE
CONTRACT_MASK_IOU = 0.98
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
REFERENCE = ("torch", "fp32")


@dataclass(frozen=True)
class Engine:
    runtime: str
    precision: str
    reason: str  # why this one: said by status, /health and the demo


@dataclass(frozen=True)
class Measurement:
    """One engine and precision on the probe; ``skipped`` says why it was not timed."""

    runtime: str
    precision: str
    seconds: float | None = None  # per probe tile, median after a warm-up
    cosine: float | None = None  # against torch fp32's embedding
    mask_iou: float | None = None  # mean over the probe's boxes, against torch fp32's masks
    conversion_seconds: float | None = None
    peak_rss_mb: float | None = None  # of the process that measured it (conversion included)
    skipped: str | None = None

    @property
    def keeps_contract(self) -> bool:
        return (self.skipped is None and self.cosine is not None and self.mask_iou is not None
                and self.cosine >= CONTRACT_COSINE and self.mask_iou >= CONTRACT_MASK_IOU)


# -- the choice: pure ----------------------------------------------------------------------

def choose(measurements: list[Measurement], runtime: str | None = None, precision: str | None = None) -> Engine:
    """The engine to run: what is named, else the fastest measured that keeps the contract
    among those matching what is named."""
    if runtime and precision:
        return Engine(runtime, precision, "named")
    timed = [m for m in measurements if m.seconds is not None
             and (runtime is None or m.runtime == runtime) and (precision is None or m.precision == precision)]
    # A named precision is the user's call on agreement: bf16 or int8 asked for runs even
    # where it misses the contract. Otherwise only what keeps it may be chosen.
    eligible = timed if precision else [m for m in timed if m.keeps_contract]
    if not eligible:
        fallback = Engine(runtime or "torch", precision or "fp32", "named" if (runtime or precision) else "")
        return fallback if fallback.reason else Engine("torch", "fp32", "nothing measured keeps the contract")
    best = min(eligible, key=lambda m: m.seconds)
    return Engine(best.runtime, best.precision, _reason(best, measurements, named=bool(runtime or precision)))


def _reason(best: Measurement, measurements: list[Measurement], named: bool) -> str:
    reference = next((m for m in measurements if (m.runtime, m.precision) == REFERENCE and m.seconds), None)
    speed = f"{best.seconds:.2f} s a tile"
    if reference and (best.runtime, best.precision) != REFERENCE:
        speed += f", {reference.seconds / best.seconds:.1f}x torch fp32"
    agreement = f"cosine {best.cosine:.6f}, mask IoU {best.mask_iou:.3f}" if best.cosine is not None else ""
    what = "fastest measured for what was named" if named else "fastest measured that keeps the contract"
    return f"{what} ({speed}; {agreement})" if agreement else f"{what} ({speed})"


# -- the machine and the record ----------------------------------------------------------------

def cpu_flags() -> set[str]:
    try:
        info = Path("/proc/cpuinfo").read_text()
        return set(next(line for line in info.splitlines() if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return set()


def cpu_model() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        return next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def cpu_summary() -> str:
    """The CPU in one line, with the flags that decide the engines' speed."""
    flags = " ".join(f for f in REPORTED_FLAGS if f in cpu_flags()) or "none of " + "/".join(REPORTED_FLAGS)
    return f"{cpu_model()}, {os.cpu_count()} cores, flags: {flags}"


def has_native_bf16() -> bool:
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


def engine_versions() -> dict[str, str]:
    """torch's and each installed runtime's version: a new version measures again."""
    import importlib.metadata as metadata

    versions = {}
    for package in ("torch", "openvino", "onnxruntime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def machine_key() -> str:
    identity = json.dumps([cpu_model(), sorted(f for f in REPORTED_FLAGS if f in cpu_flags()), os.cpu_count(),
                           engine_versions()])
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def record_path(model_id: str) -> Path:
    return converted_root() / "choices" / machine_key() / f"{model_id}.json"


def read_record(model_id: str) -> list[Measurement] | None:
    path = record_path(model_id)
    if not path.is_file():
        return None
    return [Measurement(**m) for m in json.loads(path.read_text())["measurements"]]


def write_record(model_id: str, measurements: list[Measurement]) -> Path:
    path = record_path(model_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"model_id": model_id, "cpu": cpu_summary(), "versions": engine_versions(),
              "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "contract": {"cosine": CONTRACT_COSINE, "mask_iou": CONTRACT_MASK_IOU},
              "measurements": [asdict(m) for m in measurements]}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)  # whole or absent
    return path


# -- the entry point -----------------------------------------------------------------------

UNMEASURED = {"filterbank": "no engines", "sam-tiny": "a test model"}  # why these follow the rule


def engine_for(encoder: str, checkpoint: str | None, model_id: str, runtime: str | None,
               precision: str | None) -> Engine:
    """The engine for an encoder: named, measured (``al-loop weights prepare`` records it), or
    the rule where nothing is measured yet or there is nothing to measure. Never measures: a
    measurement takes minutes, which no command should spend unasked."""
    if runtime and precision:
        return Engine(runtime, precision, "named")
    if encoder not in UNMEASURED:
        if _has_cuda():
            return Engine(runtime or "torch", precision or "fp32", "a GPU: torch")
        measurements = read_record(model_id)
        if measurements is not None:
            return choose(measurements, runtime, precision)
    return _rule(encoder, runtime, precision)


def _rule(encoder: str, runtime: str | None, precision: str | None) -> Engine:
    """Where nothing is measured: OpenVINO fp32 on a CPU-only machine where it is installed, else
    torch; SAM 2.1 on torch until measured (its conversions are new and unmeasured on a real
    checkpoint)."""
    default = "torch" if encoder.startswith("sam2.1-") else default_runtime(precision or "fp32")
    if runtime or precision:
        reason = "named"
    elif encoder in UNMEASURED:
        reason = f"the rule (not measured: {UNMEASURED[encoder]})"
    else:
        reason = f"the rule: not measured on this machine yet (al-loop weights prepare {model_of(encoder)})"
    return Engine(runtime or default, precision or "fp32", reason)


def model_of(encoder: str) -> str:
    """The ``--model`` name of an encoder: ``vit_b`` for ``sam-vit_b``; SAM 2.1's names are both."""
    return encoder.removeprefix("sam-")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
