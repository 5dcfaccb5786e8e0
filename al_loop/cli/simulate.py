"""``al-loop simulate``: replay the paper's experiment on a YOLO set, with an oracle as the expert."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from al_loop.cli.options import LOOP_SETTINGS, quiet_flag, settings_flags, settings_of
from al_loop.cli.output import print_type_table, say
from al_loop.settings import ORACLES, STRATEGIES


def _steps(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_parser(sub) -> None:
    sim = sub.add_parser(
        "simulate", help="replay the paper's experiment on a YOLO-format dataset, with an oracle as the expert",
        description="Round 1 labels the first step's count of tiles picked with no decoder (--first-round: "
        "typical tiles of the pool's clusters by default); each later round adds tiles chosen by the strategy, "
        "retrains the domain decoder, and evaluates on the valid split. The summary gives each strategy's mean "
        "with its 95 %% interval over seeds, its difference from random on the same seeds, and where the stopping "
        "rule (consecutive decoders agreeing) would have stopped.",
    )
    sim.add_argument("--dataset", type=Path, required=True, help="YOLO dataset: data.yaml, train/ and valid/ with images/ and labels/")
    sim.add_argument("--steps", type=_steps, default=[5, 10, 15, 20, 25, 50], help="labelled-tile counts per round (default 5,10,15,20,25,50)")
    sim.add_argument("--strategy", dest="strategies", default="object_entropy", help="one or more comma-separated strategies to compare: "
                     + ", ".join(STRATEGIES) + " (default object_entropy, next-batch's default)")
    sim.add_argument("--oracle", default="box", choices=ORACLES, help="how boxes become masks: box (the inscribed "
                     "ellipse, no weights needed; default) or sam (SAM box prompts)")
    settings_flags(sim, *LOOP_SETTINGS, "epochs", "stop_threshold", "stop_window")
    sim.add_argument("--first-round", default="typiclust", choices=("typiclust", "coreset", "random"),
                     help="how round 1's tiles are picked, with no decoder yet (default typiclust)")
    sim.add_argument("--seeds", type=int, default=3, help="repetitions with different first-round tiles (default 3)")
    sim.add_argument("--classes", action="store_true",
                     help="learn the boxes' classes as pit types (data.yaml's names; the simulated expert types each "
                     "pit right) and report per-type metrics")
    sim.add_argument("--regroup", action="store_true",
                     help="draw the valid split again from whole groups of near-duplicates (the data set's own split "
                     "is checked and its leakage printed either way)")
    sim.add_argument("--report", type=Path, help="write every metric of every round and seed to this JSON file")
    sim.add_argument("--json", nargs="?", const=True, default=False, metavar="",
                     help="print every round as JSON (the old `--json FILE` still writes FILE, deprecated: use --report)")
    sim.add_argument("--png", type=Path, help="draw the learning curve to this PNG file")
    quiet_flag(sim)


def run(args) -> int:
    import json

    from al_loop.embeddings.cache import EmbeddingCache
    from al_loop.experiment.simulate import SimulationConfig, load_splits, report_of, run_simulation, summarise, write_json

    if isinstance(args.json, str):  # the old `--json FILE`
        print("al-loop: warning: --json FILE is deprecated and goes in the next release; use --report FILE", file=sys.stderr)
        args.report, args.json = Path(args.json), False
    s = settings_of(args)
    config = SimulationConfig(
        dataset=args.dataset, steps=args.steps, strategies=[v.strip() for v in args.strategies.split(",") if v.strip()],
        encoder=s.encoder, oracle=args.oracle, model=s.model, checkpoint=s.checkpoint, seeds=args.seeds, epochs=s.epochs,
        classes=args.classes, precision=s.precision, runtime=s.runtime, regroup=args.regroup,
        first_round=args.first_round, stop_threshold=s.stop_threshold, stop_window=s.stop_window,
    )
    train_tiles, eval_tiles, check = load_splits(config, progress=not args.quiet)
    say(args, f"{args.dataset.name}: {check.describe()}")
    if not args.json:
        from al_loop.evaluation.metrics import HEADLINE

        print(f"{'strategy':<16}{'seed':>5}{'round':>6}{'tiles':>6}" + "".join(f"{m:>18}" for m in HEADLINE))
    rows = run_simulation(config, EmbeddingCache(s.cache_location), progress=not args.quiet,
                          on_round=None if args.json else _show_simulated_round, splits=(train_tiles, eval_tiles))
    summary = summarise(rows) if args.json else _print_simulation_summary(rows, config)
    if args.json:
        print(json.dumps(report_of(config, rows, check), indent=2))
    if args.report:
        write_json(args.report, config, rows, check)
        say(args, f"rounds written to {args.report}")
    if args.png:
        _plot(args, config, summary)
    return 0


def _plot(args, config, summary: list[dict]) -> None:
    """The learning curve of every strategy, and the first strategy's per-type curve."""
    from al_loop.evaluation.curves import plot_curves, plot_type_curves, types_png
    from al_loop.evaluation.metrics import SIMULATE_FIGURE

    split = "valid split regrouped (no copies across it)" if config.regroup else "the set's own valid split"
    title = f"{args.dataset.name}: {config.encoder} encoder, {config.oracle} oracle, {config.seeds} seeds, {split}"
    plot_curves(summary, SIMULATE_FIGURE, args.png, title)
    first = [r for r in summary if r["strategy"] == config.strategies[0]]
    typed = plot_type_curves(first, types_png(args.png), f"{title}; per type, {config.strategies[0]}")
    say(args, f"learning curve written to {args.png}" + (f", per type to {typed}" if typed else ""))


def _show_simulated_round(row: dict) -> None:
    from tqdm import tqdm

    from al_loop.evaluation.metrics import HEADLINE

    tqdm.write(f"{row['strategy']:<16}{row['seed']:>5}{row['round']:>6}{row['labelled']:>6}"
               + "".join(f"{row[m]:>18.3f}" for m in HEADLINE))


def _print_simulation_summary(rows: list[dict], config) -> list[dict]:
    """The mean over seeds per strategy and round with its 95 % interval, each strategy against
    random on the same seeds, and where the stopping rule would have stopped; returns the means."""
    from al_loop.evaluation.metrics import HEADLINE
    from al_loop.experiment.simulate import paired_against, stopping_summary, summarise

    summary = summarise(rows)
    print("\nmean over seeds (+/- the 95 % interval's half-width)")
    print(f"{'strategy':<16}{'tiles':>6}" + "".join(f"{m:>22}" for m in HEADLINE))
    for s in summary:
        print(f"{s['strategy']:<16}{s['labelled']:>6}"
              + "".join(f"{s[m]:>14.3f} +/-{s.get(m + '_ci95', float('nan')):.3f}" for m in HEADLINE))
    print_type_table(summary)
    paired = paired_against(rows) if "random" in config.strategies else []
    if paired:
        print("\nobject recall minus random's, seed by seed (same first-round tiles)")
        print(f"{'strategy':<16}{'tiles':>6}{'mean':>9}{'95 % interval':>20}{'ahead':>7}{'behind':>8}")
        for d in paired:
            low, high = d.get("ci95", (float("nan"), float("nan")))
            print(f"{d['strategy']:<16}{d['labelled']:>6}{d['mean']:>+9.3f}{f'[{low:+.3f}, {high:+.3f}]':>20}"
                  f"{d['wins']:>7}{d['losses']:>8}")
    stops = stopping_summary(rows, config.stop_threshold, config.stop_window)
    fired = [r for r in stops if r["stopped_at"] is not None]
    print(f"\nstopping rule (kappa >= {config.stop_threshold} for {config.stop_window} rounds): fired in "
          f"{len(fired)} of {len(stops)} runs" + "".join(
              f"\n  {r['strategy']} seed {r['seed']}: stops at {r['stopped_at']} tiles, saves {r['tiles_saved']}, "
              f"gives up {r['object_recall_given_up']:+.3f} object recall" for r in fired))
    return summary
