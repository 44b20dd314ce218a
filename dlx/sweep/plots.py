"""PNG plots of a sweep: the optimisation history and the metric against each parameter.

Uses matplotlib's object API with the Agg canvas (no pyplot state, no display needed).
"""

from __future__ import annotations

import math
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dlx.sweep.plan import SweepPlan


def _scored(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Finished trials, plus pruned ones at the last value they reported."""
    return [
        r
        for r in rows
        if r["status"] in ("finished", "pruned")
        and isinstance(r["value"], int | float)
        and math.isfinite(r["value"])
    ]


def _figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


# matplotlib is not thread-safe (its text parser has shared state): one figure at a time.
_LOCK = threading.Lock()


def write_plots(plan: SweepPlan, rows: Sequence[dict[str, Any]]) -> list[Path]:
    """plots/history.png and plots/param_<key>.png; nothing when no trial has a value.
    A plot that fails is a warning, never a failed sweep."""
    try:
        with _LOCK:
            return _write_plots(plan, rows)
    except Exception as err:
        print(f"warning: plots not written: {type(err).__name__}: {err}", file=sys.stderr)
        return []


def _write_plots(plan: SweepPlan, rows: Sequence[dict[str, Any]]) -> list[Path]:
    scored = _scored(rows)
    if not scored:
        return []
    out = plan.sweep_dir / "plots"
    out.mkdir(exist_ok=True)
    s = plan.settings
    paths = [_history(out / "history.png", scored, s.metric, s.maximize())]
    for p in plan.params:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", p.key.lstrip("+~"))
        paths.append(_param(out / f"param_{name}.png", scored, p, s.metric))
    return paths


def _history(path: Path, rows: Sequence[dict[str, Any]], metric: str, maximize: bool) -> Path:
    fig, ax = _figure()
    for status, marker in (("finished", "o"), ("pruned", "x")):
        pts = [(r["trial"], r["value"]) for r in rows if r["status"] == status]
        if pts:
            ax.scatter(*zip(*pts, strict=True), marker=marker, label=status)
    done = sorted((r["trial"], r["value"]) for r in rows if r["status"] == "finished")
    if done:
        best, xs, ys = None, [], []
        for trial, value in done:
            if best is None or (value > best if maximize else value < best):
                best = value
            xs.append(trial)
            ys.append(best)
        ax.step(xs, ys, where="post", color="black", label="best so far")
    ax.set(xlabel="trial", ylabel=metric, title=f"{metric} by trial")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path


def _param(path: Path, rows: Sequence[dict[str, Any]], p: Any, metric: str) -> Path:
    fig, ax = _figure()
    values = [r["params"].get(p.key) for r in rows]
    ys = [r["value"] for r in rows]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if numeric:
        ax.scatter(values, ys)
        if p.log:
            ax.set_xscale("log")
    else:  # categories, in the order the sweep lists them
        labels = [str(c) for c in p.choices] if p.discrete else sorted({str(v) for v in values})
        ax.scatter([labels.index(str(v)) for v in values], ys)
        ax.set_xticks(range(len(labels)), labels)
    ax.set(xlabel=p.key, ylabel=metric, title=f"{metric} against {p.key}")
    fig.tight_layout()
    fig.savefig(path)
    return path
