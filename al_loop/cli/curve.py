"""``al-loop curve``: the learning curve across rounds, as a table, JSON or a PNG."""
from __future__ import annotations

from pathlib import Path

from al_loop.cli.options import json_flag, settings_of, workspace_flag, workspace_of
from al_loop.cli.output import print_curve, scored_on


def add_parser(sub) -> None:
    curve = sub.add_parser("curve", help="the learning curve across rounds (mIoU, micro F1, accuracy, precision, recall)",
                           description="The validation metrics of every evaluated round.")
    workspace_flag(curve)
    curve.add_argument("--png", type=Path, help="draw it to this PNG file")
    json_flag(curve, "the rows")


def run(args) -> int:
    import json

    from al_loop.loop.status import stopping_of

    s = settings_of(args)
    workspace = workspace_of(s)
    config, rows, team = workspace.config(), workspace.curve(), workspace.team_rounds()
    if args.json:  # a round's "team": the experts' agreement on the tasks it pushed (with two or more)
        print(json.dumps([{**r, **({"team": team[r["round"]]} if r["round"] in team else {})} for r in rows], indent=2))
    else:
        print_curve(rows)
        if not rows:
            print("no evaluated round yet: label the validation tiles and run `al-loop next-batch`")
        stopping = stopping_of(workspace, s)
        if stopping["history"]:
            print("decoder agreement with the round before (the stopping rule's measure): " + ", ".join(
                f"round {n} {v:.3f}" for n, _, v in stopping["history"] if v is not None))
            print(stopping["line"])
        for number, r in team.items():
            print(f"team agreement on round {number}'s tasks: mask IoU {_or_na(r['mask_iou'])}, type kappa "
                  f"{_or_na(r['type_kappa'])}, {r['pits_by_one']} of {r['pits']} pits drawn by one expert only")
    if args.png:
        from al_loop.evaluation.curves import plot_curves, plot_type_curves, types_png
        from al_loop.evaluation.metrics import FIGURE5

        title = f"project {config.project}: learning curve ({_curve_sets(rows)})"
        # One line per validation set: points scored on different tiles are not joined.
        plot_curves([{**r, "strategy": _set_label(r)} for r in rows], FIGURE5, args.png, title)
        typed = plot_type_curves(rows, types_png(args.png), title.replace("learning curve", "per-type curve"))
        if not args.json:
            print(f"learning curve written to {args.png}" + (f", per type to {typed}" if typed else ""))
    return 0


def _or_na(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _set_label(row: dict) -> str:
    scored = scored_on(row).rstrip("*!")
    return f"scored on {scored} validation tiles" + (" (partial)" if row.get("partial") else "")


def _curve_sets(rows: list[dict]) -> str:
    """The validation sets a curve's points were scored on, for its title."""
    sizes = sorted({scored_on(r).rstrip("*!") for r in rows})
    partial = [str(r["round"]) for r in rows if r.get("partial")]
    text = f"validation tiles {', '.join(sizes) or '0'}"
    return text + (f"; partial: round {', '.join(partial)}" if partial else "")
