"""`dlx runs`: a table of the runs under an outputs folder, read from their summary.json.

No jax here: listing runs must be instant. A run dir is `<root>/<recipe>/<time>_<id>/`;
sweep trials live in `<root>/sweeps/<name>/trials/<n>/<recipe>/<time>_<id>/` (--sweeps).
A summary that says "running" while its process is gone (same host) is a crashed run:
shown as "failed". Missing or unreadable files never stop the listing.
"""

from __future__ import annotations

import json
import math
import platform
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from dlx.errors import UserError
from dlx.io import pid_alive

SWEEPS = "sweeps"
_STAMP = re.compile(r"^(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})_[0-9A-Za-z]+$")


def is_run_dir(path: Path) -> bool:
    """A `<YYYY-mm-dd_HH-MM-SS>_<id>` folder, or any folder holding a run's files."""
    if not path.is_dir():
        return False
    if _STAMP.match(path.name):
        return True
    return any((path / f).is_file() for f in ("summary.json", "meta.json", "config.yaml"))


def find_run_dirs(root: Path, sweeps: bool = False) -> list[tuple[Path, str | None]]:
    """(run dir, sweep name or None) for every run under `root`."""
    found: list[tuple[Path, str | None]] = []
    for recipe_dir in _subdirs(root):
        if recipe_dir.name == SWEEPS:
            continue
        found += [(d, None) for d in _subdirs(recipe_dir) if is_run_dir(d)]
    if sweeps:
        for sweep_dir in _subdirs(root / SWEEPS):
            for trial in _subdirs(sweep_dir / "trials"):
                for recipe_dir in _subdirs(trial):
                    found += [(d, sweep_dir.name) for d in _subdirs(recipe_dir) if is_run_dir(d)]
    return found


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir())
    except OSError:
        return []


def _read_json(path: Path) -> tuple[Any, bool]:
    """(content, ok): (None, True) when the file is absent, (None, False) when unreadable."""
    try:
        return json.loads(path.read_text()), True
    except FileNotFoundError:
        return None, True
    except (OSError, ValueError):
        return None, False


def started_at(run_dir: Path, meta: Any) -> datetime | None:
    """meta.json's "started", else the time in the dir name (local time)."""
    value = meta.get("started") if isinstance(meta, dict) else None
    if isinstance(value, str):
        for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"):
            try:
                return datetime.strptime(value, fmt).astimezone()
            except ValueError:
                continue
    m = _STAMP.match(run_dir.name)
    if m:
        try:
            return datetime.strptime(m.group(1), "%Y-%m-%d_%H-%M-%S").astimezone()
        except ValueError:
            return None
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def run_info(run_dir: Path, sweep: str | None = None, host: str | None = None) -> dict[str, Any]:
    """One row: recipe, status, best metric, steps, duration, start time, run dir."""
    host = host or platform.node()
    summary, summary_ok = _read_json(run_dir / "summary.json")
    meta, _ = _read_json(run_dir / "meta.json")
    start = started_at(run_dir, meta)
    row: dict[str, Any] = {
        "recipe": run_dir.parent.name,
        "status": "unknown",
        "best_metric": None,
        "best": None,
        "best_step": None,
        "steps": None,
        "duration_s": None,
        "started": start.isoformat(timespec="seconds") if start else None,
        "run_dir": str(run_dir),
        "sweep": sweep,
        "error": None,
    }
    if not summary_ok or (summary is not None and not isinstance(summary, dict)):
        row["status"] = "corrupt"
        return row
    if summary is None:  # crashed before the first summary was written
        return row
    status = summary.get("status")
    row["status"] = status if isinstance(status, str) and status else "unknown"
    if isinstance(summary.get("recipe"), str):
        row["recipe"] = summary["recipe"]
    if isinstance(summary.get("error"), str):
        row["error"] = summary["error"]
    best = summary.get("best")
    if isinstance(best, dict):
        names = [k for k in best if k not in ("step", "epoch")]
        if names:
            row["best_metric"], row["best"] = names[0], _number(best[names[0]])
        row["best_step"] = best.get("step") if isinstance(best.get("step"), int) else None
    if isinstance(summary.get("steps"), int) and not isinstance(summary["steps"], bool):
        row["steps"] = summary["steps"]
    row["duration_s"] = _number(summary.get("wall_time_s"))
    if row["status"] == "running":
        pid, where = summary.get("pid"), summary.get("host")
        if isinstance(pid, int) and where == host and not pid_alive(pid):
            row["status"] = "failed"
            row["error"] = row["error"] or f"process {pid} is gone (crashed or killed)"
        elif row["duration_s"] is None and start is not None:
            row["duration_s"] = max(time.time() - start.timestamp(), 0.0)
    return row


def list_runs(
    root: str | Path = "outputs", recipe: str | None = None, sweeps: bool = False
) -> list[dict[str, Any]]:
    """Every run under `root` (filtered by recipe), oldest first."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(
            f"no outputs folder at {root.resolve()}",
            hint="train something first, or pass --root DIR (the outputs.dir the runs used)",
        )
    rows = [run_info(d, s) for d, s in find_run_dirs(root, sweeps)]
    if recipe is not None:
        rows = [r for r in rows if r["recipe"] == recipe]
    return sorted(rows, key=lambda r: (r["started"] is not None, _ts(r["started"]), r["run_dir"]))


def _ts(started: str | None) -> float:
    return datetime.fromisoformat(started).timestamp() if started else 0.0


_COLORS = {
    "running": "cyan",
    "finished": "green",
    "failed": "red",
    "diverged": "magenta",
    "preempted": "yellow",
    "corrupt": "red",
}


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{seconds:.1f}s"
    h, rest = divmod(s, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def _under(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(Path(root).resolve()))
    except ValueError:
        return path


def print_runs(rows: list[dict[str, Any]], root: Path, console: Any = None) -> None:
    """A rich table; the run dir is never truncated (it wraps) so it can be copied."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # In a pipe rich would wrap at 80 columns: one line per run greps better.
    con = console or Console(highlight=False)
    if not con.is_terminal and console is None:
        con = Console(highlight=False, width=200)
    if not rows:
        con.print(f"no runs under {root}", markup=False)
        return
    metrics = {r["best_metric"] for r in rows if r["best_metric"] is not None}
    shared = metrics.pop() if len(metrics) == 1 else None  # one metric: name it in the header
    table = Table(title=f"runs under {Path(root).resolve()}", title_justify="left")
    table.add_column("started", no_wrap=True)
    table.add_column("recipe")
    table.add_column("status", no_wrap=True)
    table.add_column(f"best {shared}" if shared else "best", justify="right", no_wrap=True)
    table.add_column("steps", justify="right")
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("run dir", overflow="fold")
    for r in rows:
        started = r["started"][:19].replace("T", " ") if r["started"] else "-"
        best = "-"
        if r["best_metric"] is not None:
            best = f"{r['best']:.4f}" if r["best"] is not None else "?"
            if r["best_step"] is not None:
                best += f" @{r['best_step']}"
            if not shared:
                best = f"{r['best_metric']} {best}"
        status = Text(r["status"], style=_COLORS.get(r["status"], ""))
        where = _under(r["run_dir"], root)
        steps = str(r["steps"]) if r["steps"] is not None else "-"
        cells = (started, r["recipe"], status, best, steps, _duration(r["duration_s"]), where)
        table.add_row(*(c if isinstance(c, Text) else Text(c) for c in cells))
    con.print(table)
