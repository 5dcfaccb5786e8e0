"""Printing shared by several commands: problems of a multi-product run, lines for a person
beside JSON, a decoder's fit, the learning-curve table and its per-type table."""
from __future__ import annotations

import sys


def warn(message: str) -> None:
    print(f"al-loop: warning: {message}", file=sys.stderr)


def say(args, line: str) -> None:
    """A line for a person: on stdout, or on stderr where stdout carries JSON."""
    print(line, file=sys.stderr if getattr(args, "json", False) else sys.stdout)


def print_problems(warnings: list[str], failures: list) -> None:
    """A run over several products: what went wrong with some, while the others completed."""
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for failure in failures:
        print(f"al-loop: error: {failure}", file=sys.stderr)


def fit_line(metrics: dict) -> str:
    return (f"object recall {metrics['object_recall']:.3f}, object precision {metrics['object_precision']:.3f}, "
            f"pixel IoU of pits {metrics['iou_pit']:.3f}")


def scored_on(row: dict) -> str:
    """What a curve row was scored on: 'n/of', with * when partial and ! when the set changed."""
    if row.get("validation_scored") is None:
        return f"{row.get('tiles', float('nan')):.0f}?"  # a round recorded before the set was kept
    of = row.get("validation_of")
    marks = ("*" if row.get("partial") else "") + ("!" if row.get("changed") else "")
    return f"{row['validation_scored']}/{of}{marks}" if of is not None else f"{row['validation_scored']}{marks}"


def print_curve(rows: list[dict]) -> None:
    """The workspace's learning curve as a table, one row per evaluated round."""
    from al_loop.evaluation.metrics import TABLE

    print(f"{'round':>5}{'labelled':>10}{'validation':>12}" + "".join(f"{m:>17}" for m in TABLE))
    for row in rows:
        print(f"{row['round']:>5}{row['labelled']:>10}{scored_on(row):>12}"
              + "".join(f"{row.get(m, float('nan')):>17.3f}" for m in TABLE))
    if any(r.get("partial") for r in rows):
        print("* partial: scored before every validation tile was labelled (not comparable with complete rounds)")
    if any(r.get("changed") for r in rows):
        print("! the validation set differs from the row above: compare rows with the same set only")
    print_type_table([{**r, "strategy": f"round {r['round']}"} for r in rows])


def print_type_table(rows: list[dict]) -> None:
    """Per-type object recall / precision and the typed totals, one line per row; nothing for binary rows."""
    from al_loop.evaluation.metrics import per_type_key, type_names_in

    names = type_names_in(rows[0]) if rows else []
    if not names:
        return
    print("\nper type: object recall / precision (a pit counts when found and typed right)")
    print(f"{'':<16}{'tiles':>6}" + "".join(f"{n:>16}" for n in names) + f"{'typed recall':>14}{'mistyped':>10}")
    for row in rows:
        cells = "".join(f"{row[per_type_key('object_recall', n)]:>8.2f} / {row[per_type_key('object_precision', n)]:<5.2f}"
                        for n in names)
        print(f"{row['strategy']:<16}{row['labelled']:>6}{cells}{row['typed_object_recall']:>14.3f}"
              f"{row['objects_mistyped']:>10.1f}")
