"""`al-loop next-batch` on a 500-task project, embeddings cached, 50 labelled training tiles.

Starts a real Label Studio (SQLite) on loopback, imports 500 tiles through a local-files
storage (HiRISE train + valid, 443 tiles, plus rotated copies of train tiles to reach
500, when ../shared/data/hirise-pits is present; generated 900x900 tiles otherwise),
runs `al-loop init` (validation 10 % = 50 tiles) and round 0, then lets the simulated
expert label the 50 validation tiles and 50 pool tiles (the 5 of round 0 + 45 more)
through the API. It then times `al-loop next-batch` (a fresh process, as a user runs it)
and prints the wall time with the split by step from its --json report.
Target on the 2-core CPU machine: <= 60 s wall, Label Studio API calls included.

Embeddings go to a persistent cache (default ~/.cache/al-loop/bench-embeddings), so
only the first run pays the encoder (filterbank: ~0.8 s per 900x900 tile).

    python bench/next_batch.py [--tiles 500] [--labelled 50] [--epochs 100] [--strategy entropy]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from al_loop.demo.expert import SimulatedExpert, dataset_boxes  # noqa: E402
from al_loop.demo.servers import LabelStudioServer  # noqa: E402
from al_loop.loop.workspace import Workspace  # noqa: E402
from al_loop.studio.label_config import parse_label_config  # noqa: E402

HIRISE = Path(os.environ.get("HIRISE_PITS_DIR", ROOT.parent / "shared" / "data" / "hirise-pits"))


def make_tiles(folder: Path, count: int) -> tuple[dict[str, np.ndarray], str]:
    """``count`` tiles in ``folder`` and their expert boxes by file name."""
    folder.mkdir(parents=True)
    if (HIRISE / "data.yaml").is_file():
        boxes = dataset_boxes(HIRISE)
        names = sorted(boxes)
        for split in ("train", "valid"):
            for path in sorted((HIRISE / split / "images").iterdir()):
                if path.name in boxes and len(list(folder.iterdir())) < count:
                    shutil.copy(path, folder / path.name)
        extra = 0
        for name in names:  # rotated copies: new content hashes, boxes rotated with them
            if len(list(folder.iterdir())) >= count:
                break
            source = next(p for s in ("train", "valid") if (p := HIRISE / s / "images" / name).is_file())
            with Image.open(source) as im:
                width = im.width
                im.transpose(Image.Transpose.ROTATE_90).save(folder / f"rot90-{Path(name).stem}.png")
            x0, y0, x1, y1 = boxes[name].T if len(boxes[name]) else (np.zeros(0),) * 4
            boxes[f"rot90-{Path(name).stem}.png"] = np.stack([y0, width - x1, y1, width - x0], axis=1).reshape(-1, 4)
            extra += 1
        return boxes, f"HiRISE ({count - extra} tiles + {extra} rotated copies, 900x900)"
    from al_loop.data.synthetic import generate_tile

    boxes = {}
    for i in range(count):
        tile = generate_tile(1000 + i, 900)
        Image.fromarray(tile.image).save(folder / f"generated-{i:03d}.png")
        boxes[f"generated-{i:03d}.png"] = tile.boxes
    return boxes, "generated 900x900"


def al_loop(*argv, env) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "al_loop.cli", *map(str, argv)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"al-loop {argv[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, default=500)
    parser.add_argument("--labelled", type=int, default=50, help="labelled training tiles (validation is labelled too)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--strategy", default="entropy")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "al-loop" / "bench-embeddings")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-next-batch-"))
    server = LabelStudioServer(scratch / "ls-data", scratch / "files").start()
    try:
        boxes, kind = make_tiles(scratch / "files" / "tiles", args.tiles)
        env = {**os.environ, "LABEL_STUDIO_API_KEY": server.token, "AL_LOOP_CACHE_DIR": str(args.cache_dir)}
        ws = scratch / "ws"
        al_loop("init", "--label-studio-url", server.url, "--images", scratch / "files" / "tiles", "--workspace", ws,
                "--title", "bench next-batch", env=env)
        print(f"{args.tiles} tasks ({kind}); embedding them into {args.cache_dir} (first run only) ...", flush=True)
        _, wall0 = al_loop("next-batch", "--workspace", ws, "--quiet", "--json", env=env)
        workspace = Workspace(ws)
        from label_studio_sdk import LabelStudio

        client = LabelStudio(base_url=server.url, api_key=server.token)
        schema = parse_label_config(client.projects.get(workspace.config().project).label_config)
        expert = SimulatedExpert(client, server.url, schema, boxes)
        pushed = [r["task_id"] for r in workspace.read("SELECT task_id FROM round_tasks WHERE round = 0")]
        picks = [r["task_id"] for r in workspace.read(
            "SELECT task_id FROM tasks WHERE role = 'pool' AND task_id NOT IN (SELECT task_id FROM round_tasks) ORDER BY task_id")]
        to_label = pushed + picks[: args.labelled - (len(pushed) - workspace.counts()["validation"])]
        rows = {r["task_id"]: r for r in workspace.read("SELECT task_id, image, height, width FROM tasks")}
        started = time.perf_counter()
        for task in to_label:
            expert.answer(task, rows[task]["image"], (rows[task]["height"], rows[task]["width"]))
        label_s = time.perf_counter() - started
        proc, wall = al_loop("next-batch", "--workspace", ws, "--quiet", "--json", "--epochs", args.epochs,
                             "--strategy", args.strategy, env=env)
        report = json.loads(proc.stdout)
        counts = workspace.counts()
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nround 0 (embeddings, variety picks, tab): {wall0:.1f} s wall; expert labelled {len(to_label)} tasks "
          f"through the API in {label_s:.1f} s")
    print(f"\nnext-batch round {report['round']}: {counts['validation_labelled']} validation + {report['labelled']} training "
          f"tiles labelled, {counts['unlabelled']} unlabelled ranked, strategy {report['strategy']}, {args.epochs} epochs")
    steps = report["seconds"]
    inside = sum(steps.values())
    print(f"{'step':<12}{'seconds':>9}")
    for step, seconds in steps.items():
        print(f"{step:<12}{seconds:>9.2f}")
    print(f"{'(start-up)':<12}{wall - inside:>9.2f}   python + torch import, argument parsing")
    print(f"{'total wall':<12}{wall:>9.2f}   target <= 60 s: {'met' if wall <= 60 else 'MISSED'}")
    ls = steps.get("connect", 0) + steps.get("pull", 0) + steps.get("push", 0)
    print(f"Label Studio API calls (connect + pull + push): {ls:.2f} s; metrics: "
          + ", ".join(f"{m} {report['metrics'][m]:.3f}" for m in ("miou", "micro_f1", "object_recall") if m in report["metrics"]))


if __name__ == "__main__":
    main()
