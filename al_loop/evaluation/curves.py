"""Learning curves as pictures: metric against labelled tiles, one line per strategy."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, never a window: runs on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

from al_loop.evaluation.metrics import METRIC_LABELS, PER_TYPE, per_type_key, type_names_in  # noqa: E402


def plot_curves(summary: Sequence[dict], metrics: Sequence[str], path: str | Path, title: str = "") -> Path:
    """One panel per metric; each strategy a line with a +/- 1 std band over seeds (if any)."""
    path = Path(path)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.6), squeeze=False)
    groups = sorted({row["strategy"] for row in summary})
    for ax, metric in zip(axes[0], metrics, strict=False):
        for group in groups:
            rows = sorted((r for r in summary if r["strategy"] == group), key=lambda r: r["labelled"])
            x = [r["labelled"] for r in rows]
            y = [r[metric] for r in rows]
            ax.plot(x, y, marker="o", label=group)
            std = [r.get(metric + "_std", 0.0) for r in rows]
            if any(std):
                ax.fill_between(x, [a - b for a, b in zip(y, std, strict=False)], [a + b for a, b in zip(y, std, strict=False)], alpha=0.2)
        ax.set_xlabel("labelled tiles")
        ax.set_title(METRIC_LABELS.get(metric, metric))
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_type_curves(rows: Sequence[dict], path: str | Path, title: str = "") -> Path | None:
    """Per-type learning curves: one panel per metric of :data:`PER_TYPE`, one line per pit
    type (rows of one strategy, or one project). None for binary rows: there are no types."""
    names = type_names_in(rows[0]) if rows else []
    if not names:
        return None
    by_type = [{"strategy": name, "labelled": r["labelled"],
                **{m: r[per_type_key(m, name)] for m in PER_TYPE},
                **{m + "_std": r.get(per_type_key(m, name) + "_std", 0.0) for m in PER_TYPE}}
               for r in rows for name in names]
    return plot_curves(by_type, PER_TYPE, path, title)


def types_png(path: str | Path) -> Path:
    """Where the per-type figure goes beside a learning-curve PNG."""
    path = Path(path)
    return path.with_name(f"{path.stem}-types{path.suffix or '.png'}")
