"""Where a simulated run's time goes: one seed of each strategy side by side, by phase.

Runs ``al_loop.experiment.simulate`` on a YOLO set (default the shared HiRISE pits, regrouped,
filter-bank encoder, box oracle, the command's default steps) and times, per strategy, each
phase of its rounds: training the decoder, evaluating it on the valid split, predicting the
valid split for the stopping rule, the agreement between consecutive decoders, and choosing the
next tiles (scoring the pool included). Round 1 is the same for every strategy of a seed and is
trained once (row "round 1, shared"). Times are this process's CPU seconds (torch on one thread)
and wall seconds; on a machine shared with other jobs the wall time is the noisy one.

With ``--seeds N`` it then times the whole experiment as ``al-loop simulate`` runs it (seeds in
parallel processes, one per core), which is issue 38's target: coreset, typiclust, hybrid and
random, 10 seeds, under an hour on 2 cores.

    python bench/simulate_speed.py --cache-dir /tmp/al-cache [--strategies coreset,typiclust,hybrid,random]
        [--steps 5,10,15,20,25,50] [--seed 0] [--seeds 10] [--json out.json]

The embeddings are computed into ``--cache-dir`` on the first run (about 6 minutes on 2 cores
for the 443 tiles) and read from there afterwards; that first encoding is not timed.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

import al_loop.experiment.simulate as sim
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.models.engines import cpu_summary as cpu  # the CPU's model and the flags that decide speed

PHASES = ("train_on_tiles", "evaluate_decoder", "predict_stop_set", "agreement", "select_from_pool")  # round 1's picks are in select
HERE = Path(__file__).resolve().parents[1]


def commit() -> str:
    out = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "-C", str(HERE), "status", "--porcelain", "--", "al_loop"], capture_output=True, text=True,
                           check=False).stdout.strip()
    return out.stdout.strip() + (" (al_loop/ has uncommitted changes)" if dirty else "")


class PhaseClock:
    """CPU seconds spent in each phase function of the simulate module, while installed."""

    def __init__(self) -> None:
        self.seconds: collections.Counter[str] = collections.Counter()
        self._originals = {name: getattr(sim, name) for name in PHASES}

    def __enter__(self) -> PhaseClock:
        for name, fn in self._originals.items():
            setattr(sim, name, self._timed(name, fn))
        return self

    def __exit__(self, *exc) -> None:
        for name, fn in self._originals.items():
            setattr(sim, name, fn)

    def _timed(self, name, fn):
        def timed(*args, **kwargs):
            started = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.process_time() - started

        return timed


def side_by_side(run: sim.Run, strategies: list[str], seed: int) -> list[dict]:
    """Round 1 once, then each strategy's later rounds, each timed by phase."""
    out = []
    with PhaseClock() as clock:
        wall, started = time.perf_counter(), time.process_time()
        first = sim._train_and_measure(run, sim.first_picks(run, seed), seed, [])
        out.append({"what": "round 1, shared", "cpu_s": time.process_time() - started,
                    "wall_s": time.perf_counter() - wall, **clock.seconds})
    for strategy in strategies:
        with PhaseClock() as clock:
            wall, started = time.perf_counter(), time.process_time()
            rows = list(sim._rounds(run, strategy, seed, first))
            out.append({"what": strategy, "cpu_s": time.process_time() - started, "wall_s": time.perf_counter() - wall,
                        **clock.seconds, "object_recall": [round(r["object_recall"], 4) for r in rows]})
    return out


def print_table(table: list[dict]) -> None:
    short = {"train_on_tiles": "train", "evaluate_decoder": "evaluate", "predict_stop_set": "stop set",
             "agreement": "agreement", "select_from_pool": "select"}
    print(f"{'':<18}{'wall s':>8}{'CPU s':>8}" + "".join(f"{short[p]:>12}" for p in PHASES))
    for row in table:
        print(f"{row['what']:<18}{row['wall_s']:>8.1f}{row['cpu_s']:>8.1f}"
              + "".join(f"{row.get(p, 0.0):>12.1f}" for p in PHASES))
    total = {k: sum(r.get(k, 0.0) for r in table) for k in ("wall_s", "cpu_s", *PHASES)}
    print(f"{'one seed, all':<18}{total['wall_s']:>8.1f}{total['cpu_s']:>8.1f}"
          + "".join(f"{total[p]:>12.1f}" for p in PHASES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=HERE.parent / "shared" / "data" / "hirise-pits")
    parser.add_argument("--cache-dir", type=Path, required=True, help="embedding cache (filled on the first run)")
    parser.add_argument("--strategies", default="coreset,typiclust,hybrid,random")
    parser.add_argument("--steps", default="5,10,15,20,25,50")
    parser.add_argument("--seed", type=int, default=0, help="the seed of the side-by-side run")
    parser.add_argument("--seeds", type=int, default=0, help="then time the whole experiment with this many seeds")
    parser.add_argument("--workers", type=int, default=None, help="processes for --seeds (default: one per core)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    strategies = [s for s in args.strategies.split(",") if s]
    config = sim.SimulationConfig(dataset=args.dataset, steps=[int(s) for s in args.steps.split(",")],
                                  strategies=strategies, encoder="filterbank", oracle="box", seeds=1, regroup=True)
    cache = EmbeddingCache(args.cache_dir)
    splits = sim.load_splits(config, progress=False)[:2]
    run = sim.prepare_run(config, cache, True, splits)  # embeds what the cache lacks (not timed)
    run.progress = False
    print(f"CPU: {cpu()}; commit {commit()}; load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    print(f"{args.dataset.name}, regrouped: {len(splits[0])} train / {len(splits[1])} valid tiles; steps {config.steps}; "
          f"seed {args.seed}; torch on 1 thread; CPU seconds per phase", flush=True)

    torch.set_num_threads(1)
    table = side_by_side(run, strategies, args.seed)
    print_table(table)
    report = {"cpu": cpu(), "commit": commit(), "steps": config.steps, "seed": args.seed, "side_by_side": table}

    if args.seeds:
        full = sim.SimulationConfig(dataset=args.dataset, steps=config.steps, strategies=strategies, encoder="filterbank",
                                    oracle="box", seeds=args.seeds, regroup=True)
        workers = args.workers or sim.default_workers(args.seeds)
        print(f"\nthe whole experiment: {args.seeds} seeds x {len(strategies)} strategies in {workers} processes "
              f"(load average {os.getloadavg()[0]:.1f} at the start)", flush=True)
        started = time.perf_counter()
        rows = sim.run_simulation(full, cache, progress=False, splits=splits, workers=workers,
                                  on_round=lambda r: r["round"] == 1 and print(
                                      f"  {time.perf_counter() - started:7.0f} s: seed {r['seed']} {r['strategy']} done",
                                      flush=True))
        wall = time.perf_counter() - started
        print(f"wall {wall:.0f} s ({wall / 60:.1f} min) for {len(rows)} rounds; load average {os.getloadavg()[0]:.1f} "
              "at the end")
        report["full"] = {"seeds": args.seeds, "workers": workers, "wall_s": wall, "rounds": len(rows)}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
