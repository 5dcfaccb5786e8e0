"""The report's figures: the learning curve with what each point was scored on, per-type recall,
and each round's uncertainty range. Files only (matplotlib's Agg backend)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, never a window
import matplotlib.pyplot as plt  # noqa: E402

CURVE_METRICS = (("miou", "mIoU"), ("micro_f1", "micro F1"), ("object_recall", "object recall"),
                 ("object_precision", "object precision"))


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curve(rows: Sequence[dict], path: Path) -> Path:
    """Each metric against labelled tiles; each point labelled with the validation tiles it was
    scored on (``n/N``), partial points hollow (not every validation tile was labelled then)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    x = [r["labelled"] for r in rows]
    for key, name in CURVE_METRICS:
        y = [r.get(key) for r in rows]
        if all(v is None for v in y):
            continue
        line, = ax.plot(x, y, marker="o", label=name)
        for xi, yi, row in zip(x, y, rows, strict=True):
            if row.get("partial"):
                ax.plot([xi], [yi], marker="o", markerfacecolor="white", color=line.get_color())
    for xi, row in zip(x, rows, strict=True):
        scored, of = row.get("validation_scored"), row.get("validation_of")
        if scored is not None:
            ax.annotate(f"{scored}/{of}" if of is not None else str(scored), (xi, 0.02), ha="center", fontsize=8,
                        color="0.35")
    ax.set_xlabel("labelled tiles (grey: validation tiles scored / in the set)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("learning curve, on the held-out validation tiles")
    return _save(fig, path)


def type_recall(names: Sequence[str], recall: Sequence[float], precision: Sequence[float], path: Path) -> Path:
    """Object recall and precision per pit type of the last evaluated round, as bars."""
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(names) + 1.5), 3.4))
    positions = range(len(names))
    ax.bar([p - 0.2 for p in positions], recall, width=0.4, label="object recall")
    ax.bar([p + 0.2 for p in positions], precision, width=0.4, label="object precision")
    ax.set_xticks(list(positions), list(names))
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    ax.set_title("per type, last evaluated round")
    return _save(fig, path)


def round_scores(rounds: Sequence[tuple[int, Sequence[float]]], path: Path) -> Path:
    """The scores that ranked each round's batch (uncertainty for most strategies), one box a round."""
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    shown = [(n, s) for n, s in rounds if s]
    ax.boxplot([s for _, s in shown], positions=[n for n, _ in shown], widths=0.5)
    ax.set_xlabel("round")
    ax.set_ylabel("score of the chosen tiles")
    ax.grid(alpha=0.3, axis="y")
    ax.set_title("what each round's batch was chosen on")
    return _save(fig, path)
