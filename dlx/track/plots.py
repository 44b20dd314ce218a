"""PNG plots from metrics.jsonl: a run's learning curves and LR schedule, and several runs'
curves overlaid (`dlx plot`).

Uses matplotlib's object API with the Agg canvas (no pyplot state, no display needed).

A run's plots are drawn at its end, but importing matplotlib (~0.6 s) would add to every
run and sweep trial: `prepare_plots()`, called as a run starts, launches a helper process
that imports it meanwhile (on another core, while the run trains) and then draws each run
it is sent; `draw_run` sends it the run and waits for the files, so they exist when the
command returns. Where matplotlib is already imported, or the helper cannot be used, the
plots are drawn in-process as before.

The `dlx` command itself (`DETACHED`, set by `dlx.cli.main`) does not wait: its process ends
right after the run, so it hands the run dir to the helper and returns; the helper draws, and
once the command has exited (its stdin closes) records the result as summary.json's `plots`
field ({"files": [...]} or {"error": ...}). The PNGs follow the command by a fraction of a
second instead of delaying every run and sweep trial by it.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import select
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dlx.errors import UserError, suggest
from dlx.track.metrics import read_metrics

SPLITS = ("train", "val", "test")
# Not learning curves: the x-axis helpers, bookkeeping and speed.
NOT_CURVES = ("lr", "count", "samples_per_sec", "step_time_s")
DEFAULT_COMPARE = ("train/loss", "val/loss", "val/accuracy")

Series = dict[str, list[tuple[int, float]]]  # "val/loss" -> [(step, value), ...]


def read_series(path: Path) -> Series:
    """Every numeric `split/metric` of a metrics.jsonl as (step, value) points, in order."""
    out: Series = defaultdict(list)
    for rec in read_metrics(path):
        step = rec.get("step")
        if not isinstance(step, int):
            continue
        for key, value in rec.items():
            if "/" not in key or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                out[key].append((step, float(value)))
    return dict(out)


def _figure(panels: int, width: float = 4.2, height: float = 3.3) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(width * cols, height * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(panels)]
    return fig, axes


def _curve_names(series: Series) -> list[str]:
    """Metric names with a curve, loss and accuracy first: ['loss', 'accuracy', 'grad_norm']."""
    names = {k.split("/", 1)[1] for k in series if k.split("/", 1)[0] in SPLITS}
    names -= set(NOT_CURVES)
    first = [n for n in ("loss", "accuracy") if n in names]
    return first + sorted(names - set(first))


def learning_curves(series: Series, path: Path, title: str = "") -> Path | None:
    """One panel per metric: train (line), val (markers), test (star at its step)."""
    names = _curve_names(series)
    if not names:
        return None
    fig, axes = _figure(len(names))
    styles = {
        "train": {"lw": 1.2, "alpha": 0.8},
        "val": {"marker": "o", "ms": 4, "lw": 1.5},
        "test": {"marker": "*", "ms": 12, "ls": "none"},
    }
    for ax, name in zip(axes, names, strict=True):
        for split in SPLITS:
            pts = series.get(f"{split}/{name}")
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, label=split, **styles[split])
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path)
    return path


def lr_schedule(series: Series, path: Path, title: str = "") -> Path | None:
    pts = series.get("train/lr")
    if not pts:
        return None
    fig, (ax,) = _figure(1, width=5, height=3)
    xs, ys = zip(*pts, strict=True)
    ax.plot(xs, ys, marker=".", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title(f"learning rate{' - ' + title if title else ''}", fontsize=10)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(alpha=0.3)
    fig.savefig(path)
    return path


def plot_run(run_dir: Path) -> list[Path]:
    """plots/learning_curves.png and plots/lr_schedule.png from the run's metrics.jsonl.
    Returns the files written (none when there is nothing to plot); a plot that fails is a
    warning on stderr, never a failed run."""
    run_dir = Path(run_dir)
    result = _draw(run_dir)
    if "error" in result:
        print(f"warning: plots not written: {result['error']}", file=sys.stderr)
        return []
    return [run_dir / f for f in result["files"]]


def _draw(run_dir: Path) -> dict[str, Any]:
    """plot_run as a result for summary.json: {"files": [...]} (relative to the run dir),
    or {"error": "..."} when a plot failed."""
    try:
        metrics = run_dir / "metrics.jsonl"
        if not metrics.is_file():
            return {"files": []}
        series = read_series(metrics)
        out = run_dir / "plots"
        out.mkdir(exist_ok=True)
        title = f"{run_dir.parent.name}/{run_dir.name}"
        written = [
            learning_curves(series, out / "learning_curves.png", title),
            lr_schedule(series, out / "lr_schedule.png", title),
        ]
        return {"files": [str(p.relative_to(run_dir)) for p in written if p is not None]}
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}"}


# The helper: `python -c ...` serving one run dir per stdin line, one JSON reply per line.
_SERVE = "from dlx.track.plots import serve; serve()"
WAIT_S = 300.0  # at most this long for the helper's plots; then drawn in-process
_helper: subprocess.Popen | None = None
DETACHED = False  # the `dlx` command: hand the plots to the helper and do not wait
PENDING = {"pending": "drawn by a helper process as dlx exits"}
_lock = threading.Lock()  # one request at a time on the helper's pipes


def serve() -> None:
    """The helper's loop: import matplotlib now, then draw each run dir read from stdin."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401

    detached: list[tuple[Path, dict[str, Any]]] = []
    for line in sys.stdin:
        request = line.rstrip("\n")
        if request.startswith("detached "):
            run_dir = Path(request.removeprefix("detached "))
            detached.append((run_dir, _draw(run_dir)))
            continue
        reply = _draw(Path(request))
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    for run_dir, reply in detached:  # the command has exited: its summary.json is final
        _record(run_dir, reply)


def _record(run_dir: Path, reply: dict[str, Any]) -> None:
    """summary.json's `plots` field set to the helper's result (atomically)."""
    from dlx.io import write_json

    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text())
        if isinstance(summary, dict) and summary.get("plots") == PENDING:
            write_json(path, {**summary, "plots": reply})
    except (OSError, ValueError):
        pass


def prepare_plots() -> None:
    """Start the helper (once per process) unless matplotlib is loaded here already."""
    global _helper
    if _helper is not None and _helper.poll() is None:
        return
    _helper = None
    if "matplotlib.figure" in sys.modules or os.name == "nt":  # no select() on pipes there
        return
    try:
        _helper = subprocess.Popen(
            [sys.executable, "-c", _SERVE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "MPLBACKEND": "Agg"},
        )
    except OSError:
        _helper = None


@atexit.register
def _stop_helper() -> None:
    """End the idle helper with this process (it also exits on its own when stdin closes)."""
    proc = _helper
    if proc is None:
        return
    try:
        if proc.stdin is not None:
            proc.stdin.close()
        if DETACHED:  # it finishes the plots after we are gone
            return
        proc.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()


def _ask_helper(run_dir: Path) -> dict[str, Any] | None:
    """The helper's reply for run_dir, or None when it is gone or too slow (then stopped)."""
    global _helper
    proc = _helper
    if proc is None or proc.poll() is not None or proc.stdin is None or proc.stdout is None:
        return None
    try:
        proc.stdin.write(f"{run_dir}\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], WAIT_S)
        line = proc.stdout.readline() if ready else ""
        if line:
            return json.loads(line)
    except (OSError, ValueError):
        pass
    proc.kill()
    _helper = None
    return None


def _hand_over(run_dir: Path) -> bool:
    """Send run_dir to the helper without waiting for it (DETACHED); False if it is gone."""
    proc = _helper
    if proc is None or proc.poll() is not None or proc.stdin is None:
        return False
    try:
        with _lock:
            proc.stdin.write(f"detached {run_dir}\n")
            proc.stdin.flush()
    except OSError:
        return False
    return True


def draw_run(run_dir: Path) -> dict[str, Any]:
    """A run's plots/*.png, drawn by the helper when `prepare_plots` started one, else here.
    Returns what summary.json records: {"files": [...]} or {"error": "..."}; a failure is
    also a warning on stderr, never a failed run."""
    run_dir = Path(run_dir).resolve()
    if DETACHED and _hand_over(run_dir):
        return dict(PENDING)
    with _lock:
        result = _ask_helper(run_dir)
    if result is None:
        result = _draw(run_dir)
    if "error" in result:
        print(f"warning: plots not written: {result['error']}", file=sys.stderr)
    return result


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run dirs (with a metrics.jsonl) for each path: a run dir, or a folder holding runs
    (e.g. outputs/digits)."""
    runs: list[Path] = []
    for p in paths:
        p = Path(p).expanduser()
        if (p / "metrics.jsonl").is_file():
            runs.append(p)
        elif p.is_dir() and (found := sorted(m.parent for m in p.glob("**/metrics.jsonl"))):
            runs.extend(found)
        else:
            raise UserError(
                f"no metrics.jsonl in {p}",
                hint="pass run dirs, e.g. outputs/digits/<time>_<id>, or a folder holding runs",
            )
    return list(dict.fromkeys(r.resolve() for r in runs))


def plot_runs(
    paths: Sequence[str | Path], metrics: Sequence[str] = (), out: Path | None = None
) -> Path:
    """Overlay several runs' curves: one panel per metric, one line per run. With no
    `metrics`, the ones in DEFAULT_COMPARE that some run has."""
    runs = find_runs(paths)
    data = {run: read_series(run / "metrics.jsonl") for run in runs}
    have = {k for s in data.values() for k in s}
    if metrics:
        missing = [m for m in metrics if m not in have]
        if missing:
            raise UserError(
                f"no run has the metric {', '.join(missing)}.{suggest(missing[0], have)}",
                hint=f"metrics in these runs: {', '.join(sorted(have)) or '(none)'}",
            )
    else:
        metrics = [m for m in DEFAULT_COMPARE if m in have]
        if not metrics:
            raise UserError("these runs have no metrics to plot yet", hint="train first")
    out = Path(out) if out is not None else Path("runs.png")
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out} must end in .png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = _figure(len(metrics), width=5, height=3.6)
    labels = _labels(runs)
    for ax, metric in zip(axes, metrics, strict=True):
        for run in runs:
            pts = data[run].get(metric)
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            marker = "o" if len(pts) <= 30 else None
            ax.plot(xs, ys, marker=marker, ms=3, lw=1.3, label=labels[run])
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    # One legend for every panel (a run keeps its colour across panels).
    handles = {h.get_label(): h for ax in axes for h in ax.get_lines()}
    fig.legend(
        handles.values(),
        handles.keys(),
        loc="outside lower center",
        fontsize=8,
        ncols=min(len(handles), 2),
    )
    fig.savefig(out)
    return out.resolve()


def _labels(runs: Sequence[Path]) -> dict[Path, str]:
    """`recipe/<id>` plus the overrides typed for the run (what usually tells runs apart)."""
    import yaml

    out = {}
    for run in runs:
        label = f"{run.parent.name}/{run.name.rsplit('_', 1)[-1]}"
        try:
            typed = yaml.safe_load((run / "overrides.yaml").read_text()) or []
        except (OSError, yaml.YAMLError):
            typed = []
        shown = [
            str(o)
            for o in typed
            if not str(o).startswith(("recipe=", "outputs.", "trainer.progress"))
        ]
        if shown:
            text = " ".join(shown)
            label += " " + (text if len(text) <= 48 else text[:45] + "...")
        out[run] = label
    return out
