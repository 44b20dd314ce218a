"""How a continual run is shown: the accuracy matrix as a console table and a heatmap PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def matrix_rows(
    r: Sequence[Sequence[float]], names: Sequence[str], init: Sequence[float] | None = None
) -> tuple[list[tuple], tuple[str, ...]]:
    """Rows 'after task i' with one column per task and the mean over tasks seen so far."""
    headers = ("after", *(f"task {n}" for n in names), "avg seen")
    rows = []
    if init is not None:
        rows.append(("init", *(float(v) for v in init), ""))
    for i, row in enumerate(r):
        seen = [float(v) for v in row[: i + 1]]
        rows.append((f"{i} ({names[i]})", *(float(v) for v in row), sum(seen) / len(seen)))
    return rows, headers


def heatmap(
    r: Sequence[Sequence[float]], names: Sequence[str], path: Path, title: str = ""
) -> Path:
    """R[i][j] as a heatmap, each cell labelled with its accuracy (Agg canvas, no display)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    r = np.asarray(r, dtype=float)
    t = len(r)
    size = 1.0 + 0.75 * t
    fig = Figure(figsize=(size + 1.2, size), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(r, vmin=0.0, vmax=1.0, cmap="viridis")
    for i in range(t):
        for j in range(t):
            ax.text(
                j,
                i,
                f"{r[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="black" if r[i, j] > 0.6 else "white",
            )
    ax.set_xticks(range(t), [str(n) for n in names], rotation=45 if t > 6 else 0)
    ax.set_yticks(range(t), [str(n) for n in names])
    ax.set_xlabel("evaluated on task j")
    ax.set_ylabel("after training task i")
    ax.set_title(title or "accuracy R[i][j]", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8, label="accuracy")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def headline(metrics: dict[str, Any]) -> list[tuple[str, float]]:
    keys = ("average_accuracy", "backward_transfer", "forgetting", "forward_transfer")
    return [(k, float(metrics[k])) for k in keys if k in metrics]
