"""Read a run dir into plain data for the report: JSON-able dicts and lists, nothing drawn.

Every file is optional: a run that is still running, preempted, or never evaluated gives what
it has, and a file that cannot be read becomes a note instead of an error.
"""

from __future__ import annotations

import base64
import json
import math
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from dlx.errors import UserError
from dlx.io import read_jsonl

MAX_POINTS = 2000  # per curve; longer curves are thinned (every k-th point, the last kept)
MAX_SAMPLE_GRIDS = 6  # a GAN's sample grids: the last few epochs
SPLITS = ("train", "val", "test")
NOT_CURVES = ("lr", "count", "samples_per_sec", "step_time_s")


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (
        (path / "summary.json").is_file()
        or ((path / "config.yaml").is_file() and (path / "metrics.jsonl").is_file())
    )


def is_sweep_dir(path: Path) -> bool:
    return path.is_dir() and (path / "sweep.yaml").is_file() and (path / "trials.jsonl").exists()


def find_runs(path: Path) -> list[Path]:
    """Run dirs inside a folder (e.g. outputs/digits), oldest name first; sweep trials are
    left out unless the folder is inside the sweep."""
    found = []
    for marker in sorted(path.glob("**/summary.json")):
        run = marker.parent
        rel = run.relative_to(path).parts
        if "checkpoints" in rel or not is_run_dir(run):
            continue
        inside_sweep = any(is_sweep_dir(path.joinpath(*rel[:i])) for i in range(len(rel)))
        if not inside_sweep:
            found.append(run)
    return sorted(dict.fromkeys(found), key=lambda p: (p.name, str(p)))


# ----- small readers -----------------------------------------------------------------------


def clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities as None, numpy scalars as Python numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return clean(value.item())
    return value


def read_json(path: Path, notes: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        notes.append(f"{path.name} could not be read: {type(err).__name__}: {err}")
        return None


def read_yaml(path: Path, notes: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        notes.append(f"{path.name} could not be read: {type(err).__name__}: {err}")
        return None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl, tolerant of a half-written last line (a run still writing)."""
    return read_jsonl(path)


def png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'optim': {'lr': 1e-3}} -> {'optim.lr': 1e-3}; lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


# ----- curves ------------------------------------------------------------------------------


def series(records: Sequence[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Every numeric `split/metric` as (step, value) points, in order."""
    out: dict[str, list[tuple[int, float]]] = {}
    for rec in records:
        step = rec.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            continue
        for key, value in rec.items():
            if "/" not in key or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                out.setdefault(key, []).append((step, float(value)))
    return out


def thin(points: list[tuple[int, float]], limit: int = MAX_POINTS) -> list[tuple[int, float]]:
    if len(points) <= limit:
        return points
    k = math.ceil(len(points) / limit)
    kept = points[::k]
    return kept if kept[-1] == points[-1] else [*kept, points[-1]]


def curve_names(keys: Sequence[str]) -> list[str]:
    """Metric names that have a curve, loss and accuracy first."""
    names = {k.split("/", 1)[1] for k in keys if k.split("/", 1)[0] in SPLITS}
    names -= set(NOT_CURVES)
    first = [n for n in ("loss", "accuracy") if n in names]
    return first + sorted(names - set(first))


def aligned(lines: Sequence[tuple[str, list[tuple[int, float]]]]) -> tuple[list, list[list]]:
    """uPlot's data layout: one sorted x array (the union of steps) and per line its values
    at those steps (None where it has none)."""
    xs = sorted({s for _, pts in lines for s, _ in pts})
    index = {s: i for i, s in enumerate(xs)}
    columns = []
    for _, pts in lines:
        col: list[float | None] = [None] * len(xs)
        for s, v in pts:
            col[index[s]] = _round(v)
        columns.append(col)
    return xs, columns


def _round(v: float) -> float:
    return float(f"{v:.6g}")


# ----- one run -----------------------------------------------------------------------------


def run_label(run: Path, overrides: Sequence[str] | None) -> str:
    """`recipe/<id>` plus the overrides typed (what usually tells runs apart)."""
    label = f"{run.parent.name}/{run.name.rsplit('_', 1)[-1]}"
    shown = [
        str(o)
        for o in overrides or []
        if not str(o).startswith(("recipe=", "outputs.", "trainer.progress"))
    ]
    if shown:
        text = " ".join(shown)
        label += " " + (text if len(text) <= 60 else text[:57] + "...")
    return label


def collect_run(run: Path) -> dict[str, Any]:
    """Everything the report shows of one run dir."""
    if not is_run_dir(run):
        raise UserError(
            f"{run} is not a run dir (no summary.json, or no config.yaml and metrics.jsonl)",
            hint="pass a run dir such as outputs/digits/<time>_<id>, a folder of runs, or a "
            "sweep dir (outputs/sweeps/<name>)",
        )
    notes: list[str] = []
    summary = read_json(run / "summary.json", notes) or {}
    meta = read_json(run / "meta.json", notes) or {}
    overrides = read_yaml(run / "overrides.yaml", notes) or []
    config_text = (run / "config.yaml").read_text() if (run / "config.yaml").is_file() else ""
    config = read_yaml(run / "config.yaml", notes) or {}
    records = read_metrics(run / "metrics.jsonl")
    points = series(records)
    command = meta.get("command")
    data: dict[str, Any] = {
        "dir": str(run),
        "name": run.name,
        "label": run_label(run, overrides if isinstance(overrides, list) else []),
        "recipe": summary.get("recipe") or config.get("recipe") or run.parent.name,
        "status": summary.get("status", "unknown"),
        "summary": clean(summary),
        "command": shlex.join(str(c) for c in command) if isinstance(command, list) else None,
        "overrides": [str(o) for o in overrides] if isinstance(overrides, list) else [],
        "config_text": config_text,
        "config": flatten(clean(config)),
        "meta": clean({k: v for k, v in meta.items() if k not in ("command", "argv")}),
        "series": {k: thin(v) for k, v in points.items()},
        "counts": {k: len(v) for k, v in points.items()},
        "evals": _evals(run, notes),
        "continual": _continual(run, notes),
        "explain": _explain(run, notes),
        "samples": _samples(run, notes),
        "images": _other_images(run),
        "notes": notes,
    }
    return data


def _evals(run: Path, notes: list[str]) -> list[dict[str, Any]]:
    """What `dlx eval` wrote: eval_<split>_<step>[_n].json in the run dir (or eval/)."""
    paths = sorted(run.glob("eval_*.json")) + sorted((run / "eval").glob("*.json"))
    out = []
    for path in paths:
        rec = read_json(path, notes)
        if not isinstance(rec, dict):
            continue
        ck = rec.get("checkpoint") or {}
        out.append(
            clean(
                {
                    "file": path.name,
                    "split": rec.get("split"),
                    "step": ck.get("step"),
                    "kind": ck.get("kind"),
                    "overrides": rec.get("overrides") or [],
                    "data": rec.get("data") or {},
                    "metrics": rec.get("metrics") or {},
                    "per_class": rec.get("per_class") or [],
                    "confusion": rec.get("confusion_matrix"),
                    "evaluated": rec.get("evaluated"),
                }
            )
        )
    return out


def _continual(run: Path, notes: list[str]) -> dict[str, Any] | None:
    rec = read_json(run / "continual.json", notes)
    if not isinstance(rec, dict) or not rec.get("R"):
        return None
    keys = ("average_accuracy", "backward_transfer", "forgetting", "forward_transfer")
    return clean(
        {
            "R": rec["R"],
            "tasks": rec.get("task_names") or [f"task {i}" for i in range(len(rec["R"]))],
            "init": rec.get("init_accuracy"),
            "definition": rec.get("R_definition"),
            "scores": {k: rec.get(k) for k in keys if k in rec},
            "about": {k: rec.get(k) for k in ("stream", "scenario", "strategy", "dataset")},
            "split": rec.get("eval_split"),
        }
    )


def _explain(run: Path, notes: list[str]) -> dict[str, Any] | None:
    """explain/: its figures and the JSON files `dlx explain` wrote (shown as tables)."""
    folder = run / "explain"
    if not folder.is_dir():
        return None
    figures = [{"name": p.name, "src": png_uri(p)} for p in sorted(folder.glob("*.png"))]
    docs = {}
    for p in sorted(folder.glob("*.json")):
        rec = read_json(p, notes)
        if rec is not None:
            docs[p.name] = clean(rec)
    if not figures and not docs:
        return None
    return {"figures": figures, "json": docs}


def _sample_epoch(path: Path) -> int:
    m = re.search(r"(\d+)$", path.stem)
    return int(m.group(1)) if m else -1


def _samples(run: Path, notes: list[str]) -> dict[str, Any] | None:
    """A GAN's plots/samples_<epoch>.png (the last few) and quality.json."""
    grids = sorted((run / "plots").glob("samples_*.png"), key=_sample_epoch)
    quality = read_json(run / "quality.json", notes)
    if not grids and quality is None:
        return None
    shown = grids[-MAX_SAMPLE_GRIDS:]
    return {
        "grids": [
            {
                "name": p.name,
                "epoch": _sample_epoch(p),
                "src": png_uri(p),
                "histogram": clean(read_json(p.with_suffix(".json"), notes)),
            }
            for p in shown
        ],
        "total": len(grids),
        "quality": clean(quality),
    }


def _other_images(run: Path) -> list[dict[str, str]]:
    """PNGs the report does not redraw itself (drawn from data it has: learning curves, LR,
    confusion matrices, the continual heatmap, sample grids are shown elsewhere)."""
    redrawn = {"learning_curves.png", "lr_schedule.png", "continual_heatmap.png"}
    out = []
    for p in sorted((run / "plots").glob("*.png")):
        if p.name in redrawn or p.name.startswith("samples_"):
            continue
        out.append({"name": f"plots/{p.name}", "src": png_uri(p)})
    return out
