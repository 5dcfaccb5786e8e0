"""SAM image encoder on this CPU: fp32 vs bf16 autocast vs dynamic int8, side by side.

Seconds per 1024x1024 tile for vit_b (seeded random weights: valid for timing, the
architecture and FLOPs are the real ones) and how far each precision's embedding
and box-prompt masks stray from fp32's (cosine of embeddings, IoU of masks through
the same mask decoder).

    python bench/encoder_precision.py [--model vit_b] [--tiles 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from al_loop.data.images import DecodedTile, read_image  # noqa: E402
from al_loop.data.synthetic import generate_tile  # noqa: E402
from al_loop.models.encoders import SamEncoder  # noqa: E402
from al_loop.models.sam import PromptSegmenter, random_sam  # noqa: E402

HIRISE = Path(__file__).resolve().parents[2] / "shared" / "data" / "hirise-pits"


def tiles(n: int) -> list[tuple[DecodedTile, np.ndarray]]:
    """Real HiRISE tiles with their expert boxes when present, else generated 1024 px tiles."""
    out = []
    if (HIRISE / "data.yaml").is_file():
        from al_loop.data.yolo import load_split

        for t in load_split(HIRISE, "valid")[0][:n]:
            out.append((read_image(t.image), t.boxes))
        source = f"HiRISE valid tiles ({out[0][0].size[0]} px)"
    else:
        for i in range(n):
            g = generate_tile(i, 1024)
            out.append((DecodedTile(f"gen{i}", g.image, f"{i:064d}"), g.boxes))
        source = "generated 1024 px tiles"
    print(f"input: {source}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--tiles", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    sam = random_sam(args.model, seed=0)
    data = tiles(args.tiles)
    seg = PromptSegmenter(sam)
    results = {}
    for precision in ("fp32", "bf16", "int8"):
        enc = SamEncoder(sam, f"sam-{args.model}-random", precision)
        enc.encode(data[0][0])  # warm-up: first call pays for allocation and kernel selection
        embs, seconds = [], []
        for tile, _ in data:
            t0 = time.perf_counter()
            embs.append(enc.encode(tile))
            seconds.append(time.perf_counter() - t0)
        results[precision] = (embs, float(np.mean(seconds)))
        print(f"  {precision}: {np.mean(seconds):.2f} s/tile", flush=True)
    ref_embs = results["fp32"][0]
    print(f"\nSAM {args.model} image encoder, {torch.get_num_threads()} threads, {args.tiles} tiles (1024x1024 encoder input)")
    print(f"{'precision':<10}{'s/tile':>8}{'speed-up':>10}{'cosine vs fp32':>16}{'mask IoU vs fp32':>18}")
    for precision, (embs, sec) in results.items():
        cos = np.mean([
            float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b))) for a, b in zip(embs, ref_embs, strict=False)
        ])
        ious = []
        for (tile, boxes), e, r in zip(data, embs, ref_embs, strict=False):
            for box in boxes[:5]:
                m = seg.segment(e, tile.size, box=tuple(box)).mask
                ref = seg.segment(r, tile.size, box=tuple(box)).mask
                union = (m | ref).sum()
                ious.append((m & ref).sum() / union if union else 1.0)
        iou = f"{np.mean(ious):.3f}" if ious else "n/a"
        print(f"{precision:<10}{sec:>8.2f}{results['fp32'][1] / sec:>9.2f}x{cos:>16.4f}{iou:>18}")


if __name__ == "__main__":
    main()
