"""``al-loop train``: train a decoder from a labelled YOLO set, without Label Studio."""
from __future__ import annotations

import sys
from pathlib import Path

from al_loop.cli.options import LOOP_SETTINGS, quiet_flag, settings_flags, settings_of
from al_loop.cli.output import fit_line
from al_loop.settings import ORACLES


def add_parser(sub) -> None:
    train = sub.add_parser(
        "train", help="train a decoder from an existing labelled set (YOLO boxes), without Label Studio",
        description="Embeds every tile of the dataset's splits (cached), turns each expert box into a mask with the "
        "oracle (box: the ellipse inscribed in the box; sam: SAM box prompts, needs weights), trains the domain "
        "decoder and saves it for `al-loop map --decoder`.",
    )
    train.add_argument("--dataset", type=Path, required=True, help="YOLO dataset: data.yaml, <split>/images and <split>/labels")
    train.add_argument("--out", type=Path, required=True, help="decoder file to write (.pt)")
    train.add_argument("--oracle", default="box", choices=ORACLES, help="how boxes become masks: box (the inscribed "
                       "ellipse, no weights needed; default) or sam (SAM box prompts)")
    train.add_argument("--splits", default="train", help="comma-separated splits to train on (default train)")
    train.add_argument("--held-out", type=float, default=0.15, help="share of the tiles (whole groups of copies) "
                       "kept back to score the decoder on tiles it never saw (default 0.15; 0: none)")
    train.add_argument("--binary", action="store_true", help="learn one type, pit, even when data.yaml names "
                       "several (default: the decoder learns data.yaml's types, as next-batch does)")
    train.add_argument("--regroup", action="store_true", help="leave out training tiles that have a near-duplicate "
                       "in the splits not trained on, so those stay a fair test (their leakage is printed either way)")
    settings_flags(train, *LOOP_SETTINGS, "epochs")
    quiet_flag(train)


def run(args) -> int:
    from al_loop.embeddings.cache import EmbeddingCache
    from al_loop.mapping.from_dataset import DatasetTraining, train_from_dataset

    s = settings_of(args)
    job = DatasetTraining(args.dataset, s.encoder, args.oracle, tuple(p for p in args.splits.split(",") if p),
                          s.model, s.checkpoint, precision=s.precision, epochs=s.epochs, runtime=s.runtime,
                          regroup=args.regroup, held_out=args.held_out, binary=args.binary)
    report = train_from_dataset(job, args.out, EmbeddingCache(s.cache_location), progress=not args.quiet)
    for skipped in report.skipped:
        print(f"skipped {skipped}", file=sys.stderr)
    if report.split:
        print(f"{args.dataset.name}: {report.split.describe('held-out (other splits)')}"
              + (f"; {report.dropped} training tile(s) with a copy there left out" if report.dropped else ""))
    print(f"decoder trained on {report.tiles} tiles ({report.boxes} expert boxes, {args.oracle} oracle, "
          f"encoder {report.encoder_id}) written to {report.path}")
    if report.held_out:
        print(f"on {len(report.held_out['tiles'])} held-out tiles it never saw: {fit_line(report.held_out['metrics'])}")
    else:
        print("no tile held out (--held-out 0): nothing says how well it fits tiles it never saw")
    return 0
