"""PNG grids of attributions and attention maps (matplotlib object API, Agg canvas)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PER_ROW = 4  # examples per row of a grid


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _label(ax: Any, pred: int, true: int, names: Sequence[str] | None) -> None:
    def name(i: int) -> str:
        return names[i] if names is not None and 0 <= i < len(names) else str(i)

    ok = pred == true
    ax.set_title(
        f"pred {name(pred)} / true {name(true)}", fontsize=8, color="black" if ok else "red"
    )


def _show_input(ax: Any, img: np.ndarray) -> None:
    """(H, W, C): gray for one channel, RGB (rescaled to [0, 1]) for three, else the mean."""
    if img.shape[-1] == 3:
        lo, hi = img.min(), img.max()
        ax.imshow((img - lo) / (hi - lo if hi > lo else 1.0))
    else:
        ax.imshow(img.mean(-1), cmap="gray")


def image_grid(
    path: Path,
    x: np.ndarray,
    attr: np.ndarray,
    pred: np.ndarray,
    true: np.ndarray,
    title: str,
    signed: bool,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Each example: its input and its attribution map side by side. Unsigned maps (saliency)
    show |attribution| (max over channels); signed ones (integrated gradients) the sum over
    channels, red positive and blue negative, on a symmetric scale per example."""
    n = len(x)
    cols = min(n, PER_ROW)
    rows = math.ceil(n / cols)
    fig = _figure(2.1 * 2 * cols, 2.2 * rows + 0.4)
    grid = fig.add_gridspec(rows, 2 * cols)
    for i in range(n):
        r, c = divmod(i, cols)
        ax_in = fig.add_subplot(grid[r, 2 * c])
        ax_at = fig.add_subplot(grid[r, 2 * c + 1])
        _show_input(ax_in, x[i])
        _label(ax_in, int(pred[i]), int(true[i]), class_names)
        if signed:
            a = attr[i].sum(-1)
            lim = float(np.abs(a).max()) or 1.0
            ax_at.imshow(a, cmap="bwr", vmin=-lim, vmax=lim)
        else:
            ax_at.imshow(np.abs(attr[i]).max(-1), cmap="hot")
        ax_at.set_title("attribution", fontsize=8)
        for ax in (ax_in, ax_at):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.savefig(path)
    return path


def time_grid(
    path: Path,
    x: np.ndarray,
    step_attr: np.ndarray,
    pred: np.ndarray,
    true: np.ndarray,
    title: str,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Each example: its input over time (a line for one feature, an image of features x time
    otherwise) above its attribution per time step (bars: red raises the predicted logit)."""
    n, t = step_attr.shape
    cols = min(n, PER_ROW)
    rows = math.ceil(n / cols)
    fig = _figure(3.4 * cols, 2.6 * rows + 0.4)
    grid = fig.add_gridspec(2 * rows, cols, height_ratios=[1.2, 1] * rows)
    steps = np.arange(t)
    for i in range(n):
        r, c = divmod(i, cols)
        ax_in = fig.add_subplot(grid[2 * r, c])
        ax_at = fig.add_subplot(grid[2 * r + 1, c], sharex=ax_in)
        seq = x[i].reshape(t, -1)
        if seq.shape[1] == 1:
            ax_in.plot(steps, seq[:, 0], lw=1.2, color="black")
        else:  # features down, time across (an image read row by row shows transposed)
            ax_in.imshow(seq.T, cmap="gray", aspect="auto", extent=(-0.5, t - 0.5, seq.shape[1], 0))
            ax_in.set_ylabel("feature", fontsize=7)
        if c == 0:
            ax_at.set_ylabel("attribution", fontsize=7)
        _label(ax_in, int(pred[i]), int(true[i]), class_names)
        a = step_attr[i]
        ax_at.bar(steps, a, width=0.9, color=np.where(a >= 0, "tab:red", "tab:blue"))
        ax_at.axhline(0, color="gray", lw=0.5)
        ax_in.tick_params(labelsize=6, labelbottom=False)
        ax_at.tick_params(labelsize=6)
        if r == rows - 1:
            ax_at.set_xlabel("time step", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path)
    return path


def attention_grid(path: Path, weights: np.ndarray, labels: Sequence[str], title: str) -> Path:
    """One panel per head: (heads, T, T), row = query position, column = key position."""
    heads, t, _ = weights.shape
    wide = t > 32  # room for a label on every row and column
    cols = min(heads, 2 if wide else 4)
    rows = math.ceil(heads / cols)
    size = 5.6 if wide else 3.2
    fig = _figure(size * cols, size * rows + 0.5)
    # Tick every position for tokens; plain position numbers are left to matplotlib.
    ticks = t <= 64 and len(labels) == t and not all(lab.isdigit() for lab in labels)
    for h in range(heads):
        ax = fig.add_subplot(rows, cols, h + 1)
        ax.imshow(weights[h], cmap="viridis", vmin=0.0, interpolation="nearest")
        ax.set_title(f"head {h}", fontsize=9)
        if ticks:
            ax.set_xticks(range(t), labels, fontsize=6, rotation=90)
            ax.set_yticks(range(t), labels, fontsize=6)
        else:
            ax.tick_params(labelsize=6)
        ax.set_xlabel("key", fontsize=7)
        ax.set_ylabel("query", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path)
    return path


LABELS = {
    "saliency": "saliency",
    "integrated_gradients": "integrated gradients",
    "smoothgrad": "SmoothGrad",
    "gradcam": "Grad-CAM",
    "occlusion": "occlusion",
}


def _show_map(ax: Any, m: np.ndarray, signed: bool) -> None:
    if signed:
        lim = float(np.abs(m).max()) or 1.0
        ax.imshow(m, cmap="bwr", vmin=-lim, vmax=lim)
    else:
        ax.imshow(m, cmap="hot", vmin=0.0)


def _bare(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def methods_grid(
    path: Path,
    x: np.ndarray,
    maps: dict[str, np.ndarray],
    signed: Sequence[str] | frozenset,
    pred: np.ndarray,
    true: np.ndarray,
    title: str,
    class_names: Sequence[str] | None = None,
) -> Path:
    """One row per example: the input, then each method's (H, W) map (signed ones red/blue on
    a symmetric scale, the others 'hot'), each scaled per example."""
    names = list(maps)
    n, cols = len(x), len(names) + 1
    fig = _figure(1.7 * cols, 1.75 * n + 0.5)
    for i in range(n):
        ax = fig.add_subplot(n, cols, i * cols + 1)
        _show_input(ax, x[i])
        _label(ax, int(pred[i]), int(true[i]), class_names)
        _bare(ax)
        for j, name in enumerate(names):
            ax = fig.add_subplot(n, cols, i * cols + j + 2)
            _show_map(ax, maps[name][i], name in signed)
            if i == 0:
                ax.set_title(LABELS.get(name, name), fontsize=8)
            _bare(ax)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path)
    return path


def faithfulness_curves(
    path: Path,
    fractions: np.ndarray,
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    random: tuple[np.ndarray, np.ndarray],
    title: str,
) -> Path:
    """Deletion (left) and insertion (right): mean probability of the explained class against
    the fraction of pixels removed / inserted, one line per method (AUC in the legend), random
    rankings dashed."""
    fig = _figure(10.0, 4.0)
    for k, mode in enumerate(("deletion", "insertion")):
        ax = fig.add_subplot(1, 2, k + 1)
        for name, pair in curves.items():
            auc = float(np.trapezoid(pair[k], fractions))
            ax.plot(fractions, pair[k], lw=1.6, label=f"{LABELS.get(name, name)} ({auc:.3f})")
        auc = float(np.trapezoid(random[k], fractions))
        ax.plot(fractions, random[k], "k--", lw=1.4, label=f"random ({auc:.3f})")
        ax.set_xlabel(f"fraction of pixels {'removed' if k == 0 else 'inserted'}", fontsize=8)
        ax.set_ylabel("probability of the explained class", fontsize=8)
        ax.set_title(f"{mode} (AUC: {'lower' if k == 0 else 'higher'} is better)", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path)
    return path


def sanity_grid(
    path: Path,
    x: np.ndarray,
    trained: dict[str, np.ndarray],
    random: dict[str, np.ndarray],
    rho: dict[str, float],
    signed: Sequence[str] | frozenset,
    title: str,
) -> Path:
    """One row per method: for each example its map under the trained weights, then under
    random weights; the method's mean rank correlation in the row title."""
    names = [k for k in trained if k in random]
    n = len(x)
    rows, cols = len(names), 1 + 2 * n
    fig = _figure(1.5 * cols, 1.7 * max(rows, 1) + 0.5)
    for r, name in enumerate(names):
        for i in range(n):
            if i == 0:
                ax = fig.add_subplot(rows, cols, r * cols + 1)
                ax.text(
                    0.5,
                    0.5,
                    f"{LABELS.get(name, name)}\nrho = {rho[name]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                )
                ax.axis("off")
            for k, (what, m) in enumerate((("trained", trained), ("random", random))):
                ax = fig.add_subplot(rows, cols, r * cols + 2 + 2 * i + k)
                _show_map(ax, m[name][i], name in signed)
                if r == 0:
                    ax.set_title(f"#{i} {what}", fontsize=7)
                _bare(ax)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path)
    return path
