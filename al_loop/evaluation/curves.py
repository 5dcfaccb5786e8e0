"""Learning curves as pictures: metric against labelled tiles, one line per strategy."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files, never a window: runs on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

from al_loop.evaluation.metrics import METRIC_LABELS  # noqa: E402

def plot_curves(summary: Sequence[dict], metrics: Sequence[str], path: str | Path, title: str = "") -> Path:
    """One panel per metric; each strategy a line with a +/- 1 std band over seeds (if any)."""
    path = Path(path)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.6), squeeze=False)
    groups = sorted({row["strategy"] for row in summary})
    for ax, metric in zip(axes[0], metrics):
        for group in groups:
            rows = sorted((r for r in summary if r["strategy"] == group), key=lambda r: r["labelled"])
            x = [r["labelled"] for r in rows]
            y = [r[metric] for r in rows]
            ax.plot(x, y, marker="o", label=group)
            std = [r.get(metric + "_std", 0.0) for r in rows]
            if any(std):
                ax.fill_between(x, [a - b for a, b in zip(y, std)], [a + b for a, b in zip(y, std)], alpha=0.2)
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
