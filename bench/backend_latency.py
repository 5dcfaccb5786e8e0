"""Interactive box -> mask latency of the ML backend over HTTP, and its behaviour under load.

Starts `al-loop serve-backend` (gunicorn) with a vit_b-sized SAM (seeded random weights:
timing is valid, masks are not), on 900x900 tiles (HiRISE's valid split when
../shared/data/hirise-pits is present, else generated tiles), and prints:
  - the cold first request on a new tile (one encoder pass) and the encoder pass alone;
  - warm-cache latency of N sequential box prompts: p50 / p99 (targets 150 / 400 ms);
  - 8 concurrent clients x 50 box prompts over 10 tiles, cache cold for 9 of them:
    errors, encoder passes (from /metrics; must equal the tile count), p50 / p99.

    python bench/backend_latency.py [--model vit_b] [--warm 200] [--clients 8] [--per-client 50]
                                    [--runtime torch|openvino|onnx]

``--runtime`` serves SAM (image encoder and prompt decoder) on that engine; the CPU model and
flags are printed with the figures.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from al_loop.data.images import read_image  # noqa: E402
from al_loop.demo.servers import BackendServer  # noqa: E402
from al_loop.models.encoders import SamEncoder  # noqa: E402
from al_loop.models.sam import random_sam  # noqa: E402
from al_loop.studio.label_config import default_label_config  # noqa: E402
from ml_backend.telemetry import parse_metrics  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from map_product import cpu  # noqa: E402

HIRISE = Path(os.environ.get("HIRISE_PITS_DIR", ROOT.parent / "shared" / "data" / "hirise-pits"))
CONFIG = default_label_config()


def tiles(directory: Path, count: int) -> list[Path]:
    source = HIRISE / "valid" / "images"
    if source.is_dir():
        chosen = sorted(source.glob("*.jpg"))[:count]
        for path in chosen:
            shutil.copy(path, directory / path.name)  # a temp copy: symlinks leave the allowed root
        return [directory / p.name for p in chosen]
    from PIL import Image

    from al_loop.data.synthetic import generate_tile

    paths = []
    for i in range(count):
        path = directory / f"generated-{i}.png"
        Image.fromarray(generate_tile(i, 900).image).save(path)
        paths.append(path)
    return paths


def box_request(url: str, image: str, rng: np.random.Generator) -> float:
    x, y = rng.uniform(5, 70, size=2)
    w, h = rng.uniform(5, 25, size=2)
    context = {"result": [{
        "original_width": 900, "original_height": 900, "type": "rectanglelabels", "from_name": "box", "to_name": "image",
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": ["pit"]},
    }]}
    body = {"tasks": [{"id": 1, "data": {"image": image}}], "label_config": CONFIG, "params": {"context": context}}
    started = time.perf_counter()
    reply = requests.post(f"{url}/predict", json=body, timeout=900)
    elapsed = time.perf_counter() - started
    if reply.status_code != 200 or not reply.json()["results"]:
        raise RuntimeError(f"{reply.status_code}: {reply.text[:200]}")
    return elapsed


def run_clients(url: str, paths: list[Path], clients: int, per_client: int, phase: str) -> None:
    latencies, errors, lock = [], [], threading.Lock()

    def client(index: int) -> None:
        local_rng = np.random.default_rng(100 + index)
        for i in range(per_client):
            image = paths[(index + i) % len(paths)].name
            try:
                elapsed = box_request(url, image, local_rng)
                with lock:
                    latencies.append(elapsed)
            except Exception as exc:  # counted, not raised: the benchmark reports errors
                with lock:
                    errors.append(str(exc))

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    m = metrics(url)
    lat = np.array(latencies) * 1000
    print(f"\n{clients} clients x {per_client} box prompts over {len(paths)} tiles, {phase}: {wall:.0f} s wall")
    print(f"  requests ok {len(latencies)}, errors {len(errors)}")
    print(f"  encoder passes so far {m['al_backend_encoder_passes_total']:.0f} for {len(paths)} tiles; "
          f"cache hits {m['al_backend_embedding_cache_hits_total']:.0f}")
    print(f"  latency p50 {np.percentile(lat, 50):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms, max {lat.max():.0f} ms")
    print(f"  backend worker peak RSS {m['process_peak_rss_bytes'] / 2**30:.2f} GiB")
    if errors:
        print("  first error:", errors[0])


def metrics(url: str) -> dict:
    return parse_metrics(requests.get(f"{url}/metrics", timeout=30).text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=50)
    parser.add_argument("--tiles", type=int, default=10)
    parser.add_argument("--runtime", default="torch", choices=["torch", "openvino", "onnx"])
    parser.add_argument("--runtime-cache", type=Path,
                        help="where converted models are kept (default: a fresh folder, so the backend converts); "
                        "give one a previous run filled to measure a backend that finds its model converted")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-backend-"))
    (work / "tiles").mkdir()
    paths = tiles(work / "tiles", args.tiles)
    print(f"machine: {cpu()}, torch {torch.__version__}; runtime {args.runtime}; tiles: {paths[0].parent} "
          f"({len(paths)} x 900x900)")

    sam = random_sam(args.model)
    checkpoint = work / f"random-{args.model}.pth"
    torch.save(sam.state_dict(), checkpoint)
    encoder = SamEncoder(sam, "timing")
    tile = read_image(paths[0])
    started = time.perf_counter()
    encoder.encode(tile)
    encoder_seconds = time.perf_counter() - started
    del sam, encoder

    # One request thread more than clients: the backend keeps one thread free of predictions (for
    # /health), so N clients at once need N + 1 threads, or the last one is told "busy" (503).
    backend = BackendServer(
        work / "workspace", work / "cache", model=args.model, checkpoint=str(checkpoint), local_root=work / "tiles",
        extra_env={"AL_LOOP_BACKEND_THREADS": str(args.clients + 1), "AL_LOOP_RUNTIME": args.runtime,
                   "AL_LOOP_RUNTIME_CACHE": str(args.runtime_cache or work / "runtimes")},
    ).start(timeout=600)
    try:
        url = backend.url
        rng = np.random.default_rng(0)
        cold = box_request(url, paths[0].name, rng)
        m = metrics(url)
        print(f"\ncold first request: {cold:.2f} s (encoder pass alone, in-process: {encoder_seconds:.2f} s); "
              f"encoder passes so far: {m['al_backend_encoder_passes_total']:.0f}; "
              f"worker peak RSS {m['process_peak_rss_bytes'] / 2**30:.2f} GiB")

        warm = np.array([box_request(url, paths[0].name, rng) for _ in range(args.warm)]) * 1000
        print(f"warm cache, {args.warm} sequential box prompts: p50 {np.percentile(warm, 50):.0f} ms, "
              f"p99 {np.percentile(warm, 99):.0f} ms, max {warm.max():.0f} ms   (targets: p50 <= 150, p99 <= 400)")

        for phase in ("cold cache for all but one tile", "every tile cached"):
            run_clients(url, paths, args.clients, args.per_client, phase)
    finally:
        backend.stop()


if __name__ == "__main__":
    main()
