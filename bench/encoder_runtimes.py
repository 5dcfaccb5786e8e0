"""SAM on CPU inference engines, side by side in one run (issue 17): torch eager, OpenVINO,
ONNX Runtime, each at the precisions it offers.

Per runtime x precision: seconds per tile of SAM's image encoder (1024 x 1024 input; the
median of --repeats rounds, runtimes interleaved round by round, after one warm-up pass each),
the conversion (once per weights, precision and runtime version) and load times, cosine and
max-abs error of the embedding against torch fp32, the box-prompt mask IoU against torch fp32
(the same prompt decoder on both embeddings; the tiles' expert boxes), and the prompt decoder's
latency per box prompt (p50 / p99) on each runtime. vit_b with seeded random weights by
default: the architecture and FLOPs are the real ones (valid for timing and agreement of
numbers), the masks are not meaningful. torch bf16 is skipped on CPUs without native bf16,
where it is many times slower than fp32. Prints the CPU model and flags with the figures.

    python bench/encoder_runtimes.py [--model vit_b] [--tiles 3] [--repeats 3] [--prompts 50]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from encoder_precision import tiles  # noqa: E402  (puts the repo on sys.path)
from map_product import cpu  # noqa: E402

from al_loop.models.encoders import SamEncoder  # noqa: E402
from al_loop.models.sam import PromptSegmenter, build_tiny_sam, random_sam  # noqa: E402

COMBINATIONS = [("torch", "fp32"), ("torch", "bf16"), ("torch", "int8"), ("openvino", "fp32"),
                ("openvino", "bf16"), ("onnx", "fp32"), ("onnx", "int8")]


def cpu_has_bf16() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def build(sam, model_id: str, runtime: str, precision: str) -> tuple[SamEncoder, float, float]:
    """The encoder, seconds to make it the first time (conversion included), seconds to load it again."""
    started = time.perf_counter()
    SamEncoder(sam, model_id, precision, runtime)
    first = time.perf_counter() - started
    started = time.perf_counter()
    encoder = SamEncoder(sam, model_id, precision, runtime)
    return encoder, first, time.perf_counter() - started


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b)))


def mask_iou(seg: PromptSegmenter, data, embeddings, reference) -> float:
    ious = []
    for (tile, boxes), e, r in zip(data, embeddings, reference, strict=False):
        for box in boxes[:5]:
            m, ref = seg.segment(e, tile.size, box=tuple(box)).mask, seg.segment(r, tile.size, box=tuple(box)).mask
            union = (m | ref).sum()
            ious.append((m & ref).sum() / union if union else 1.0)
    return float(np.mean(ious)) if ious else float("nan")


def prompt_latency(sam, model_id: str, runtime: str, data, embedding, count: int) -> tuple[float, float]:
    seg = PromptSegmenter(sam, model_id, runtime)
    tile, boxes = data[0]
    box = tuple(boxes[0]) if len(boxes) else (100.0, 100.0, 300.0, 300.0)
    seg.segment(embedding, tile.size, box=box)  # warm-up
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        seg.segment(embedding, tile.size, box=box)
        seconds.append(time.perf_counter() - started)
    return float(np.percentile(seconds, 50) * 1000), float(np.percentile(seconds, 99) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--tiles", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=50)
    args = parser.parse_args()
    os.environ.setdefault("AL_LOOP_RUNTIME_CACHE", tempfile.mkdtemp(prefix="bench-runtimes-"))
    print(cpu())
    sam = build_tiny_sam() if args.model == "tiny" else random_sam(args.model, seed=0)  # tiny: a smoke run
    model_id = f"sam-{args.model}-random"
    data = tiles(args.tiles)
    combos = [c for c in COMBINATIONS if c != ("torch", "bf16") or cpu_has_bf16()]
    if ("torch", "bf16") not in combos:
        print("torch bf16 skipped: this CPU has no native bf16 (it would run many times slower than fp32)")
    encoders, made = {}, {}
    for combo in list(combos):
        try:
            encoders[combo], first, load = build(sam, model_id, *combo)
        except Exception as exc:  # a combination this model cannot take is reported, not fatal
            print(f"  failed: {combo[0]} {combo[1]}: {type(exc).__name__}: {exc}", flush=True)
            combos.remove(combo)
            continue
        made[combo] = (first, load)
        encoders[combo].encode(data[0][0])  # warm-up
        print(f"  ready: {combo[0]} {combo[1]} (first build {first:.1f} s, load {load:.1f} s)", flush=True)
    seconds = {combo: [] for combo in combos}
    embeddings = {combo: [] for combo in combos}
    for round_ in range(args.repeats):
        for combo in combos:  # interleaved, so that drift in the machine's load hits all alike
            for _i, (tile, _) in enumerate(data):
                started = time.perf_counter()
                embedding = encoders[combo].encode(tile)
                seconds[combo].append(time.perf_counter() - started)
                if round_ == 0:
                    embeddings[combo].append(embedding)
    report(args, sam, model_id, data, combos, seconds, embeddings, made)


def report(args, sam, model_id, data, combos, seconds, embeddings, made) -> None:
    reference = embeddings[("torch", "fp32")]
    base = float(np.median(seconds[("torch", "fp32")]))
    seg = PromptSegmenter(sam)
    print(f"\nSAM {args.model} image encoder (random weights), {torch.get_num_threads()} threads, "
          f"{len(data)} tiles x {args.repeats} rounds; {cpu()}")
    print(f"{'runtime':<10}{'prec':<6}{'s/tile':>8}{'speed-up':>10}{'convert s':>11}{'load s':>8}"
          f"{'cosine':>10}{'max abs':>10}{'mask IoU':>10}")
    for combo in combos:
        median = float(np.median(seconds[combo]))
        cos = np.mean([cosine(a, b) for a, b in zip(embeddings[combo], reference, strict=False)])
        err = max(float(np.abs(a - b).max()) for a, b in zip(embeddings[combo], reference, strict=False))
        iou = mask_iou(seg, data, embeddings[combo], reference)
        first, load = made[combo]
        print(f"{combo[0]:<10}{combo[1]:<6}{median:>8.2f}{base / median:>9.2f}x{first:>11.1f}{load:>8.1f}"
              f"{cos:>10.6f}{err:>10.2e}{iou:>10.3f}")
    print(f"\nprompt decoder per box prompt ({args.prompts} prompts, one cached embedding):")
    for runtime in ("torch", "openvino", "onnx"):
        if (runtime, "fp32") in combos:
            p50, p99 = prompt_latency(sam, model_id, runtime, data, reference[0], args.prompts)
            print(f"  {runtime:<9} p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(cpu())


if __name__ == "__main__":
    main()
