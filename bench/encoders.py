"""Choosing an encoder: SAM vit_b, MobileSAM vit_t and SAM 2.1 on every engine this machine has, each
combination timed in a process of its own (loading OpenVINO and ONNX Runtime into one process
slowed torch fp32 from 8.2 to 12.1 s a tile, which inflates every ratio against it).

Per model x runtime x precision: seconds per tile (median over --repeats passes of --tiles real
HiRISE tiles, after a warm-up), start-up (building the model and loading or converting the
engine), the conversion alone when the engine's cache was empty, the process's peak RSS, the
cache bytes per tile (float16, as the cache stores it), and agreement with the same model on
torch fp32 (embedding cosine, box-mask IoU on the tiles' expert boxes). Random weights saved
in the official formats: real FLOPs, meaningless masks. Then a 2 000-tile product's encoding
time at each rate. Prints the CPU model and flags with the figures.

    python bench/encoders.py [--models vit_b,vit_t,sam2.1-hiera_t,sam2.1-hiera_s] [--tiles 2] [--repeats 2]
                             [--out docs/encoders.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from encoder_precision import tiles  # noqa: E402  (puts the repo on sys.path)
from map_product import cpu, peak_rss_mb  # noqa: E402

COMBINATIONS = [("torch", "fp32"), ("torch", "bf16"), ("torch", "int8"), ("openvino", "fp32"), ("openvino", "bf16"),
                ("onnx", "fp32"), ("onnx", "int8")]
PRODUCT_TILES = 2000


def one(model: str, runtime: str, precision: str, n_tiles: int, repeats: int, work: Path) -> dict:
    """One combination, in this (fresh) process: its figures, and its embeddings saved for agreement."""
    import torch

    from al_loop.models.encoders import SamEncoder
    from al_loop.models.sam import random_sam

    started = time.perf_counter()
    if model.startswith("sam2.1-"):  # SAM 2.1: random weights saved in the official format, loaded as a user's
        from al_loop.models.encoders import Sam2Encoder
        from al_loop.models.sam2 import build_sam2

        checkpoint = work / f"{model}-random.pt"
        if not checkpoint.is_file():
            torch.save({"model": build_sam2(model.split("-", 1)[1], None, seed=0).state_dict()}, checkpoint)
        encoder = Sam2Encoder(model, str(checkpoint), precision, runtime)
    else:
        sam = random_sam(model, seed=0)
        encoder = SamEncoder(sam, f"sam-{model}-random", precision, runtime)
    data = tiles(n_tiles)
    first = encoder.encode(data[0][0])
    startup = time.perf_counter() - started
    seconds, embeddings = [], []
    for _ in range(repeats):
        for tile, _ in data:
            t0 = time.perf_counter()
            embeddings.append(encoder.encode(tile))
            seconds.append(time.perf_counter() - t0)
    np.save(work / f"{model}-{runtime}-{precision}.npy", np.stack(embeddings[:n_tiles]))
    compiled = getattr(encoder, "_image_encoder", None) or getattr(encoder, "_compiled", None)  # SAM | SAM 2.1
    record = getattr(compiled, "agreement", None) or {}
    return {"model": model, "runtime": runtime, "precision": precision, "s_per_tile": float(np.median(seconds)),
            "startup_s": startup, "conversion_s": record.get("seconds"), "peak_rss_mb": peak_rss_mb(),
            # SAM 2.1 caches two high-res maps beside the embedding for prompts (32x256x256, 64x128x128)
            "cache_bytes_per_tile": int(first.astype(np.float16).nbytes) * (4 if model.startswith("sam2.1-") else 1),
            "threads": torch.get_num_threads()}


def agreement(model: str, combo: tuple[str, str], work: Path, n_tiles: int) -> tuple[float, float]:
    """(mean cosine, mean box-mask IoU) of a combination's embeddings against torch fp32's."""
    from al_loop.models.sam import PromptSegmenter, random_sam

    reference = np.load(work / f"{model}-torch-fp32.npy")
    other = np.load(work / f"{model}-{combo[0]}-{combo[1]}.npy")
    cosines = [float(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b))) for a, b in zip(other, reference, strict=False)]
    if model.startswith("sam2.1-"):  # its prompts need the high-res maps, which this bench does not keep
        return float(np.mean(cosines)), float("nan")
    segmenter, ious = PromptSegmenter(random_sam(model, seed=0)), []
    for (tile, boxes), a, b in zip(tiles(n_tiles), other, reference, strict=False):
        for box in boxes[:5]:
            m1 = segmenter.segment(a, tile.size, box=tuple(box)).mask
            m2 = segmenter.segment(b, tile.size, box=tuple(box)).mask
            ious.append((m1 & m2).sum() / max(1, (m1 | m2).sum()))
    return float(np.mean(cosines)), float(np.mean(ious)) if ious else float("nan")


def available(combo: tuple[str, str], model: str = "") -> bool:
    import importlib.util

    if model.startswith("sam2.1-") and combo == ("torch", "int8"):
        return False  # SAM 2.1 on torch: fp32 or bf16 (int8 is offered on ONNX Runtime)
    module = {"openvino": "openvino", "onnx": "onnxruntime"}.get(combo[0])
    if module and importlib.util.find_spec(module) is None:
        return False
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    # bf16 without native support runs many times slower than fp32 (17x on a Zen 3): not a candidate
    return combo[1] != "bf16" or any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="vit_b,vit_t,sam2.1-hiera_t,sam2.1-hiera_s")
    parser.add_argument("--tiles", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "RUNTIME", "PRECISION"), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.tiles, args.repeats, args.work)))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-encoders-"))
    env = {**os.environ, "AL_LOOP_RUNTIME_CACHE": str(work / "converted")}
    print(cpu(), flush=True)
    rows = []
    for model in args.models.split(","):
        for combo in (c for c in COMBINATIONS if available(c, model)):
            command = [sys.executable, __file__, "--one", model, *combo, "--tiles", str(args.tiles), "--repeats",
                       str(args.repeats), "--work", str(work)]
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                print(f"{model} {combo[0]} {combo[1]}: failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{model} {combo[0]} {combo[1]}: {rows[-1]['s_per_tile']:.2f} s/tile", flush=True)
    report(rows, work, args)


def report(rows: list[dict], work: Path, args) -> None:
    base = {r["model"]: r["s_per_tile"] for r in rows if (r["runtime"], r["precision"]) == ("torch", "fp32")}
    vit_b = base.get("vit_b")
    print(f"\n{cpu()}; {args.tiles} HiRISE tiles x {args.repeats} passes, random weights, each row its own process")
    print("| model | runtime | precision | s / tile | vs vit_b torch fp32 | start-up s | conversion s | peak RSS MB "
          "| cache bytes / tile | cosine | box-mask IoU | 2 000 tiles |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cos, iou = agreement(r["model"], (r["runtime"], r["precision"]), work, args.tiles)
        r.update(cosine=cos, mask_iou=iou)
        speed = f"{vit_b / r['s_per_tile']:.1f}x" if vit_b else "-"
        conversion = f"{r['conversion_s']:.0f}" if r["conversion_s"] else "-"
        print(f"| {r['model']} | {r['runtime']} | {r['precision']} | {r['s_per_tile']:.2f} | {speed} | "
              f"{r['startup_s']:.1f} | {conversion} | {r['peak_rss_mb']:.0f} | {r['cache_bytes_per_tile']:,} | "
              f"{cos:.6f} | {'-' if np.isnan(iou) else f'{iou:.3f}'} | {PRODUCT_TILES * r['s_per_tile'] / 60:.0f} min |")
    if args.out:
        args.out.write_text(json.dumps({"cpu": cpu(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
