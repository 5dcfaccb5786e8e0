"""`al-loop embed` on its two engines, side by side in one run (issue 16).

Writes --tiles tiles of --size px (crops of the real HiRISE tiles of ../shared/data/hirise-pits
when present, turned or flipped to make more; else generated Mars-like tiles), then runs:

  local            the local engine (`--engine local`), in a fresh child process, fresh cache;
  local resume     the same again on its now full cache;
  ray xW           the Ray engine with W = 1, 2, 4, ... up to --workers-max encoder actors,
                   each on a fresh cache (so each encodes every tile);
  ray xW resume    the largest pool again on its full cache;
  ray xW half      the largest pool on a fresh cache that already holds every other tile
                   (put there first by the local engine, not timed): it must encode the rest only.

Ray is started once, here, for all Ray runs (`ray.init(num_cpus=os.cpu_count())`), and that
start is reported on its own line; each Ray run then only attaches. Every figure is printed
with the CPU line; --json writes them all, with the phases of every run.

    python bench/embed_engines.py                                  # 32 tiles of 900 px, filterbank, 1 and 2 workers
    python bench/embed_engines.py --encoder sam-vit_b-random --tiles 64 --workers-max 4
    python bench/embed_engines.py --encoder sam-vit_b --checkpoint sam_vit_b_01ec64.pth --json embed.json
    python bench/embed_engines.py --tiles 6 --size 256 --workers-max 2  # smoke run (3 min on 2 cores)

Encoders: any name of al_loop.models.encoders.ENCODERS (filterbank: no weights; sam-vit_b/l/h:
need their checkpoint; sam-tiny: SAM's architecture at toy size, plumbing only), plus
`sam-vit_b-random`, for this bench only: SAM vit_b with seeded random weights, the real
network's cost without the 375 MB checkpoint (registered in each Ray worker by a
worker_process_setup_hook). Realistic SAM timing needs vit_b, random or real.

What the columns mean (one row per run):

  wk           encoder workers (Ray actors; the local engine is one);
  enc/hit/fail the run's status rows: encoded, already cached, failed (fresh cache: all encoded);
  start        the engine's start: local, building the encoder and opening the cache; Ray, attaching
               to the running Ray (phases["start"]; the cluster's own start is the "ray start" line);
  load         model load, the first miss of each worker, summed over workers (phases["model load"]);
  1st batch    seconds from the run's start until the first batch of results is back: on Ray,
               actor start + model load + one batch (phases["first batch"]); local, computed as
               start + load + the first batch's encoding (the local engine has no such phase);
  wall         the whole run, end to end (phases["wall"]);
  /s/worker    steady rate inside the encoder: encoded tiles / seconds spent encoding them, summed
               over workers, i.e. what one worker does once warm (EmbedRun.rates()[0]);
  /s e2e       encoded tiles / wall: the rate you get, fixed overheads included (rates()[1]);
  hit %        cached / tiles: the resume runs' hit rate;
  RSS MB, PSS  the largest sum, over samples every 0.5 s, of the memory of this process and all
               its descendants (the local child; Ray's GCS, raylet, agents, idle and actor
               workers): RSS counts pages shared between processes (the object store) once per
               process, PSS shares them out; "base" is the sum when the run started.

Threads: Ray gives an actor OMP_NUM_THREADS = its CPUs (--cpus-per-worker), so torch in an
actor uses that many threads; the local child is given the same count (printed), so that
"ray x1" against "local" compares the engines, not thread counts. On a single machine the
Ray runs share its cores: the scaling line shows what a second worker adds here, not on a cluster.
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
from map_product import cpu  # noqa: E402

from al_loop.embeddings.engine import CACHED, ENCODED, FAILED, EmbedConfig, EmbedRun, run_local, tile_sources  # noqa: E402
from al_loop.models.encoders import ENCODERS  # noqa: E402

HIRISE = Path(os.environ.get("HIRISE_PITS_DIR", ROOT.parent / "shared" / "data" / "hirise-pits"))
RANDOM_VIT_B = "sam-vit_b-random"


def register_bench_encoders() -> None:
    """Adds ``sam-vit_b-random`` to the encoder registry of the process it runs in (this one,
    a local child, or a Ray worker through the worker_process_setup_hook). Self-contained:
    Ray ships it to workers by value."""
    from al_loop.models import encoders
    from al_loop.models.sam import random_sam

    model_id = "sam-vit_b-random-seed0"

    class RandomVitB(encoders.EncoderSpec):
        def cache_id(self, checkpoint=None, precision: str = "fp32") -> str:
            return model_id if precision == "fp32" else f"{model_id}-{precision}"

        def build(self, checkpoint=None, precision: str = "fp32"):
            return encoders.SamEncoder(random_sam("vit_b"), model_id, precision)

    encoders.ENCODERS.setdefault("sam-vit_b-random", RandomVitB(64, 256, "vit_b"))


# --- tiles ---------------------------------------------------------------------------------


def write_tiles(folder: Path, count: int, size: int) -> tuple[list[str], str]:
    """``count`` distinct PNG tiles of ``size`` px; (paths, where they came from)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    images = sorted((HIRISE / "valid" / "images").glob("*.jpg")) + sorted((HIRISE / "train" / "images").glob("*.jpg"))
    if images and count > 8 * len(images):
        raise SystemExit(f"--tiles {count}: at most {8 * len(images)} distinct tiles from {HIRISE}")
    for i in range(count):
        if images:
            grey = np.asarray(Image.open(images[i % len(images)]).convert("L"))
            h, w = grey.shape
            if size <= min(h, w):
                top, left = (h - size) // 2, (w - size) // 2
                grey = grey[top:top + size, left:left + size]
            else:
                grey = np.asarray(Image.fromarray(grey).resize((size, size), Image.BILINEAR))
            variant = i // len(images)  # the 8 turns and flips: the same terrain, other bytes
            grey = np.rot90(grey, variant % 4)
            if variant >= 4:
                grey = grey[:, ::-1]
        else:
            from al_loop.data.synthetic import generate_tile

            grey = generate_tile(i, size).image
        Image.fromarray(np.ascontiguousarray(grey)).save(folder / f"tile-{i:05d}.png")
    origin = f"HiRISE tiles of {HIRISE} (center crops)" if images else "generated tiles (no HiRISE data found)"
    return tile_sources([folder]), origin


# --- memory of the process tree ------------------------------------------------------------


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _kb(path: str, key: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_memory_mb(root: int) -> tuple[float, float, int]:
    """(RSS, PSS, processes) summed over ``root`` and its descendants."""
    pids = _tree(root)
    rss = sum(_kb(f"/proc/{pid}/status", "VmRSS:") for pid in pids)
    pss = sum(_kb(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in pids)
    return rss / 1024, pss / 1024, len(pids)


class TreeMemory(threading.Thread):
    """Samples the memory of this process's tree every ``every`` s; ``window()`` gives the
    peaks since the last call."""

    def __init__(self, every: float = 0.5):
        super().__init__(daemon=True)
        self.every, self.root = every, os.getpid()
        self.lock, self.stopped = threading.Lock(), threading.Event()
        self.enabled = Path(f"/proc/{self.root}/status").is_file()
        self._reset()

    def _reset(self) -> None:
        rss, pss, procs = tree_memory_mb(self.root) if self.enabled else (0.0, 0.0, 0)
        self.base = {"rss_mb": rss, "pss_mb": pss, "processes": procs}
        self.peak = dict(self.base)

    def run(self) -> None:
        while self.enabled and not self.stopped.wait(self.every):
            rss, pss, procs = tree_memory_mb(self.root)
            with self.lock:
                self.peak = {"rss_mb": max(self.peak["rss_mb"], rss), "pss_mb": max(self.peak["pss_mb"], pss),
                             "processes": max(self.peak["processes"], procs)}

    def window(self) -> dict:
        with self.lock:
            out = {"base_rss_mb": self.base["rss_mb"], "peak_rss_mb": self.peak["rss_mb"],
                   "peak_pss_mb": self.peak["pss_mb"], "peak_processes": self.peak["processes"]}
            self._reset()
        return out


# --- runs ----------------------------------------------------------------------------------


def _local_child(sources: list[str], config: EmbedConfig, batch_size: int, threads: int) -> dict:
    """One local-engine run, in a fresh process (its memory is its own)."""
    import torch

    torch.set_num_threads(threads)
    if config.encoder == RANDOM_VIT_B:
        register_bench_encoders()
    run = run_local(sources, config, batch_size, progress=False)
    return {"rows": run.rows, "phases": run.phases}


def local_run(sources: list[str], config: EmbedConfig, batch_size: int, threads: int) -> EmbedRun:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        out = pool.submit(_local_child, list(sources), config, batch_size, threads).result()
    run = EmbedRun("local", out["rows"], out["phases"])
    first = run.rows[:batch_size]  # the local engine does not time its first batch: add it up
    run.phases["first batch"] = run.phases["start"] + sum(r["load_seconds"] + r["seconds"] for r in first)
    return run


def record(name: str, workers: int, run: EmbedRun, cache: str, memory: TreeMemory) -> dict:
    counts, (inside, end_to_end) = run.counts, run.rates()
    return {"name": name, "engine": run.engine, "workers": workers, "cache": cache, "tiles": len(run.rows),
            "encoded": counts[ENCODED], "cached": counts[CACHED], "failed": counts[FAILED],
            "hit_rate": counts[CACHED] / len(run.rows) if run.rows else 0.0,
            "phases": dict(run.phases), "tiles_per_s_per_worker": inside, "tiles_per_s_end_to_end": end_to_end,
            "memory": memory.window(), "failures": [r["reason"] for r in run.failures][:5]}


def worker_counts(most: int) -> list[int]:
    counts, w = [], 1
    while w < most:
        counts.append(w)
        w *= 2
    return counts + [most]


def print_table(rows: list[dict]) -> None:
    head = (f"{'run':<16}{'wk':>3}{'enc':>5}{'hit':>5}{'fail':>5}{'start s':>8}{'load s':>7}{'1st batch s':>12}"
            f"{'wall s':>8}{'/s/worker':>10}{'/s e2e':>8}{'hit %':>6}{'RSS MB peak (base)':>20}{'PSS MB':>8}")
    print(head)
    for r in rows:
        p, m = r["phases"], r["memory"]
        print(f"{r['name']:<16}{r['workers']:>3}{r['encoded']:>5}{r['cached']:>5}{r['failed']:>5}{p.get('start', 0):>8.2f}"
              f"{p.get('model load', 0):>7.2f}{p.get('first batch', float('nan')):>12.2f}{p.get('wall', 0):>8.2f}"
              f"{r['tiles_per_s_per_worker']:>10.2f}{r['tiles_per_s_end_to_end']:>8.2f}{100 * r['hit_rate']:>6.0f}"
              f"{m['peak_rss_mb']:>11.0f} ({m['base_rss_mb']:>5.0f}){m['peak_pss_mb']:>8.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", default="filterbank", choices=[*ENCODERS, RANDOM_VIT_B],
                        help="encoder (default filterbank; sam-vit_b-random: vit_b's cost without weights)")
    parser.add_argument("--checkpoint", help="SAM checkpoint for sam-vit_b/l/h (else the weights folder)")
    parser.add_argument("--tiles", type=int, default=32, help="tiles per run (default 32)")
    parser.add_argument("--size", type=int, default=900, help="tile side in px (default 900, HiRISE's: the real tiles as they are)")
    parser.add_argument("--workers-max", type=int, default=2, help="Ray pools of 1, 2, 4, ... up to this many actors (default 2)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0, help="Ray: CPUs per actor; also the local run's threads (default 1)")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, help="Ray: GPUs per actor (default 0)")
    parser.add_argument("--batch-size", type=int, help="tiles per batch (default: tiles / (4 x workers-max), 1 to 8)")
    parser.add_argument("--cache-root", help="where the runs' caches go, a folder or s3://bucket/prefix (default: the scratch dir; an S3 prefix is left in place)")
    parser.add_argument("--dir", type=Path, help="scratch directory (default: a temporary one, removed after)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    if args.tiles < 2 or args.workers_max < 1:
        parser.error("--tiles must be at least 2 and --workers-max at least 1")
    batch_size = args.batch_size or min(8, max(1, args.tiles // (4 * args.workers_max)))
    threads = max(1, int(args.cpus_per_worker))
    if args.encoder == RANDOM_VIT_B:
        register_bench_encoders()

    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-embed-"))
    cache_root = (args.cache_root or str(work / "caches")).rstrip("/")
    stamp = time.strftime("%Y%m%d-%H%M%S")

    def cache(name: str) -> str:  # a fresh one per run: a new folder or prefix
        return f"{cache_root}/{stamp}-{name}"

    cpu_line = cpu()
    print(f"CPU: {cpu_line}")
    sources, origin = write_tiles(work / "tiles", args.tiles, args.size)
    print(f"{len(sources)} tiles of {args.size} px: {origin}; encoder {args.encoder}; batch size {batch_size}; "
          f"caches under {cache_root}")
    config = EmbedConfig(args.encoder, args.checkpoint, "fp32", None)

    def config_for(cache_url: str) -> EmbedConfig:
        return EmbedConfig(config.encoder, config.checkpoint, config.precision, cache_url)

    memory = TreeMemory()
    memory.start()
    rows: list[dict] = []
    report: dict = {"cpu": cpu_line, "tiles": len(sources), "size": args.size, "origin": origin, "encoder": args.encoder,
                    "batch_size": batch_size, "cpus_per_worker": args.cpus_per_worker,
                    "gpus_per_worker": args.gpus_per_worker, "runs": rows}
    try:
        # The local engine first, before Ray's processes exist: its tree is this process and its child.
        local_cache = cache("local")
        memory.window()
        rows.append(record("local", 1, local_run(sources, config_for(local_cache), batch_size, threads), local_cache, memory))
        rows.append(record("local resume", 1, local_run(sources, config_for(local_cache), batch_size, threads), local_cache, memory))

        import ray
        import ray.data

        from al_loop.embeddings.ray_engine import run_ray

        logging.getLogger("ray.data").setLevel(logging.WARNING)  # its per-run INFO lines; the table says it all
        runtime_env = {"worker_process_setup_hook": register_bench_encoders} if args.encoder == RANDOM_VIT_B else None
        started = time.perf_counter()
        # address="local": a new Ray here, even where a `ray start` cluster runs on this machine.
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 runtime_env=runtime_env)
        report["ray_start_s"] = time.perf_counter() - started
        report["ray_start_memory"] = memory.window()

        @ray.remote
        def actor_threads() -> tuple[int, str]:
            import torch

            return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS", "unset")

        report["threads"] = {"local": threads, "ray_worker": ray.get(actor_threads.options(num_cpus=args.cpus_per_worker).remote())}

        def ray_row(name: str, workers: int, cache_url: str) -> dict:
            memory.window()
            run = run_ray(sources, config_for(cache_url), None, workers, args.gpus_per_worker, args.cpus_per_worker,
                          batch_size, progress=False)
            return record(name, workers, run, cache_url, memory)

        most = args.workers_max
        for workers in worker_counts(most):
            rows.append(ray_row(f"ray x{workers}", workers, cache(f"ray-x{workers}")))
        rows.append(ray_row(f"ray x{most} resume", most, cache(f"ray-x{most}")))
        half_cache = cache("half")
        prefill = local_run(sources[::2], config_for(half_cache), batch_size, threads)  # every other tile; not timed
        report["half_prefilled"] = prefill.counts[ENCODED]
        rows.append(ray_row(f"ray x{most} half", most, half_cache))
        ray.shutdown()
    finally:
        memory.stopped.set()
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)

    threads_ray, omp = report["threads"]["ray_worker"]
    print(f"ray start (once, {os.cpu_count()} CPUs, no dashboard): {report['ray_start_s']:.2f} s, "
          f"process tree then {report['ray_start_memory']['peak_rss_mb']:.0f} MB RSS in {report['ray_start_memory']['peak_processes']} processes; "
          f"torch threads: local {threads}, Ray actor {threads_ray} (OMP_NUM_THREADS={omp})")
    print_table(rows)
    by = {r["name"]: r for r in rows}
    checks = summarize(by, len(sources), most, report["half_prefilled"])
    report["checks"] = checks
    print(f"CPU: {cpu_line}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
        print(f"figures written to {args.json}")
    return 0 if all(ok for ok, _ in checks.values()) else 1


def summarize(by: dict[str, dict], tiles: int, most: int, prefilled: int) -> dict[str, tuple[bool, str]]:
    """The comparison lines, and the checks that make the figures meaningful."""
    local, one = by["local"], by["ray x1"]
    top, resume, half = by[f"ray x{most}"], by[f"ray x{most} resume"], by[f"ray x{most} half"]

    def ratio(a: float, b: float) -> str:
        return f"x{a / b:.2f}" if b > 0 else "n/a"

    print(f"ray x1 vs local: /s/worker {one['tiles_per_s_per_worker']:.2f} vs {local['tiles_per_s_per_worker']:.2f} "
          f"({ratio(one['tiles_per_s_per_worker'], local['tiles_per_s_per_worker'])}), end to end "
          f"{one['tiles_per_s_end_to_end']:.2f} vs {local['tiles_per_s_end_to_end']:.2f} "
          f"({ratio(one['tiles_per_s_end_to_end'], local['tiles_per_s_end_to_end'])}); wall {one['phases']['wall']:.2f} vs "
          f"{local['phases']['wall']:.2f} s (+ {one['phases']['wall'] - local['phases']['wall']:.2f} s on Ray)")
    if most > 1:
        print(f"scaling 1 -> {most} workers on Ray: end to end {ratio(top['tiles_per_s_end_to_end'], one['tiles_per_s_end_to_end'])} "
              f"(ideal x{most}), per worker inside the encoder {ratio(top['tiles_per_s_per_worker'], one['tiles_per_s_per_worker'])} "
              f"(ideal x1.00); wall {one['phases']['wall']:.2f} -> {top['phases']['wall']:.2f} s")
    print(f"resume on a full cache: {resume['cached']}/{resume['tiles']} hits ({100 * resume['hit_rate']:.0f} %), "
          f"{resume['encoded']} encoded, wall {resume['phases']['wall']:.2f} s against {top['phases']['wall']:.2f} s fresh "
          f"(model load {resume['phases'].get('model load', 0):.2f} s); local: {by['local resume']['phases']['wall']:.2f} s "
          f"against {local['phases']['wall']:.2f} s")
    print(f"resume on a half-full cache ({prefilled} of {tiles} tiles there): {half['encoded']} encoded, {half['cached']} hits, "
          f"wall {half['phases']['wall']:.2f} s")
    fresh = [r for r in by.values() if r["name"] in ("local", *(f"ray x{w}" for w in worker_counts(most)))]
    checks = {
        "fresh runs encode every tile": (all(r["encoded"] == tiles for r in fresh), ""),
        "no failures": (not any(r["failed"] for r in by.values()), "; ".join(f for r in by.values() for f in r["failures"])),
        "full cache: all hits, no model load": (resume["cached"] == tiles and by["local resume"]["cached"] == tiles
                                                and resume["phases"].get("model load", 0) == 0, ""),
        "half cache: encodes only the rest": (half["cached"] == prefilled and half["encoded"] == tiles - prefilled, ""),
    }
    for name, (ok, detail) in checks.items():
        print(f"check {'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}")
    return checks


if __name__ == "__main__":
    sys.exit(main())
