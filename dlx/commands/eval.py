"""`dlx eval`: reload a run, restore one of its checkpoints and measure it on a split.

Loss and accuracy come from the same `evaluate` the training loop uses (every example counted
exactly once), so evaluating the best checkpoint on test reproduces the run's test metrics.
Classifiers add per-class precision/recall/F1 and a confusion matrix (JSON + PNG); language
models add bits per character and perplexity. Results go to `eval_<split>_<step>.json` in
the run dir; an existing file is never overwritten (`_2`, `_3`, ... are appended).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlx.errors import UserError
from dlx.io import write_json

SPLITS = ("test", "val", "train")
KINDS = ("best", "latest")


# ---- metrics: pure numpy ---------------------------------------------------------------


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]; labels below 0 (padding) are ignored."""
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    keep = y_true >= 0
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (y_true[keep], y_pred[keep]), 1)
    return cm


def per_class_metrics(cm: np.ndarray) -> dict[str, Any]:
    """Precision, recall, F1 and support per class, plus their macro averages.

    A ratio with a zero denominator (a class never predicted, or never present) is 0, as in
    scikit-learn. Macro averages are taken over the classes that occur in the labels or the
    predictions (scikit-learn's default), so a small eval subset that misses a class is not
    dragged down by a class it could not have scored on.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)

    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.divide(a, b, out=np.zeros_like(a), where=b > 0)

    precision, recall = ratio(tp, predicted), ratio(tp, support)
    f1 = ratio(2 * precision * recall, precision + recall)
    seen = (support > 0) | (predicted > 0)
    classes = [
        {
            "class": i,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i in range(len(cm))
    ]
    macro = {
        name: float(values[seen].mean()) if seen.any() else float("nan")
        for name, values in (("precision", precision), ("recall", recall), ("f1", f1))
    }
    total = cm.sum()
    accuracy = float(tp.sum() / total) if total else float("nan")
    return {"per_class": classes, "macro": macro, "accuracy": accuracy}


# ---- model side (jax) -------------------------------------------------------------------


def predictions(task: Any, state: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    """argmax predictions for every example, in order (fixed batch shape; padding dropped),
    from the task's eval-mode logits: the same numbers its eval step scores (running
    statistics, test-time augmentation)."""
    from dlx.data import eval_batches

    out = []
    for idx, mask in eval_batches(len(x), batch_size):
        out.append(np.asarray(_predict(task, state, x[idx]))[mask])
    return np.concatenate(out) if out else np.zeros((0,), np.int64)


def _predict(task: Any, state: Any, x: Any) -> Any:
    import jax

    global _PREDICT
    if _PREDICT is None:
        _PREDICT = jax.jit(
            lambda task, state, x: task.logits(state.params, {"x": x}, state.model_state).argmax(
                -1
            ),
            static_argnums=0,
        )
    return _PREDICT(task, state, x)


_PREDICT: Any = None


# ---- the command --------------------------------------------------------------------------


@dataclass
class EvalResult:
    run_dir: Path
    split: str
    step: int
    kind: str
    task: str
    metrics: dict[str, float]
    record: dict[str, Any]
    json_path: Path
    png_path: Path | None = None
    per_class: list[dict[str, Any]] = field(default_factory=list)


def pick_checkpoint(
    run_dir: Path, path: Path, latest: bool, step: int | None
) -> tuple[str, int | None]:
    """(kind, step) to restore: --step N, --latest, a checkpoint path given, or best."""
    if latest and step is not None:
        raise UserError("--latest and --step cannot be used together", hint="pick one")
    saved = {k: _saved_steps(run_dir / "checkpoints" / k) for k in KINDS}
    if step is not None:
        for kind in ("latest", "best"):  # same params either way: both saved at that step
            if step in saved[kind]:
                return kind, step
        have = sorted(set(saved["latest"]) | set(saved["best"]))
        raise UserError(
            f"no checkpoint at step {step} in {run_dir}",
            hint=f"saved steps: {', '.join(map(str, have)) or 'none'} "
            f"(best: {saved['best'] or 'none'})",
        )
    if latest:
        return "latest", None
    # A path inside checkpoints/<kind>[/<step>] picks that kind (and step).
    try:
        rel = path.resolve().relative_to(run_dir / "checkpoints").parts
    except ValueError:
        rel = ()
    if rel and rel[0] in KINDS:
        if len(rel) > 1 and rel[1].isdigit():
            return rel[0], int(rel[1])
        return rel[0], None
    if not saved["best"] and saved["latest"]:  # e.g. preempted before its first eval
        raise UserError(
            f"{run_dir} has no best checkpoint yet, only latest "
            f"(steps {', '.join(map(str, saved['latest']))})",
            hint="evaluate it with --latest (or --step N)",
        )
    return "best", None


def _saved_steps(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def run_eval(
    path: str | Path,
    overrides: Sequence[str] = (),
    *,
    split: str = "test",
    latest: bool = False,
    step: int | None = None,
    plot: bool = True,
) -> EvalResult:
    """Evaluate a run's checkpoint on `split`; writes the eval JSON (and confusion PNG)."""
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'", hint=f"--split {'|'.join(SPLITS)}")
    from dlx.restore import find_run_dir, load_run

    t0 = time.time()
    run_dir = find_run_dir(path)
    kind, step = pick_checkpoint(run_dir, Path(path).expanduser(), latest, step)

    from dlx.training.loop import evaluate

    loaded = load_run(run_dir, list(overrides), kind=kind, step=step)
    cfg, data, strategy = loaded.cfg, loaded.data, loaded.setup.strategy
    arrays = data.arrays(split)
    x, y = arrays["x"], arrays["y"]
    if len(x) == 0:
        raise UserError(f"the {split} split of {data.name} is empty", hint="pick another --split")
    batch = int(cfg.data.eval_batch_size)
    state = strategy.place(loaded.state)
    out = evaluate(loaded.task, state, loaded.task.host_batch(arrays), batch, strategy)
    metrics = {f"{split}/{k}": v for k, v in out.items()}
    task = loaded.task.name
    record: dict[str, Any] = {
        "run_dir": str(run_dir),
        "recipe": cfg.get("recipe"),
        "split": split,
        "checkpoint": {"kind": kind, "step": loaded.step, "meta": loaded.meta},
        "overrides": list(overrides),
        "data": {"name": data.name, "source": data.source, "examples": len(x)},
        "task": task,
    }
    stem, json_path = _claim(run_dir, f"eval_{split}_{loaded.step}")
    png_path = None
    per_class: list[dict[str, Any]] = []
    try:
        if task == "classify":
            pred = predictions(loaded.task, state, x, strategy.eval_batch_size(batch, len(x)))
            cm = confusion_matrix(y, pred, data.num_classes)
            report = per_class_metrics(cm)
            per_class = report["per_class"]
            metrics.update({f"{split}/macro_{k}": v for k, v in report["macro"].items()})
            record.update(per_class=per_class, confusion_matrix=cm.tolist())
            if plot:
                png_path = run_dir / f"{stem}_confusion.png"
                plot_confusion(cm, png_path, f"{split}, step {loaded.step} ({kind})")
                record["confusion_png"] = png_path.name
        record["metrics"] = metrics
        record.update(evaluated=time.strftime("%Y-%m-%dT%H:%M:%S%z"), wall_time_s=time.time() - t0)
        write_json(json_path, record)
    except BaseException:
        json_path.unlink(missing_ok=True)  # give the claimed name back
        raise
    return EvalResult(
        run_dir, split, loaded.step, kind, task, metrics, record, json_path, png_path, per_class
    )


def _claim(run_dir: Path, base: str) -> tuple[str, Path]:
    """A fresh name: `base`, `base_2`, ... whose JSON and PNG are both free; the JSON is
    created exclusively, so two evals at once never pick the same name."""
    for n in range(1, 10_000):
        stem = base if n == 1 else f"{base}_{n}"
        path = run_dir / f"{stem}.json"
        if (run_dir / f"{stem}_confusion.png").exists():
            continue
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.close(fd)
        return stem, path
    raise UserError(f"too many evals named {base}_N in {run_dir}")


def plot_confusion(cm: np.ndarray, path: Path, title: str) -> None:
    """The confusion matrix as a PNG (Agg canvas: no display needed); rows are true labels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = len(cm)
    size = min(4 + 0.4 * k, 16)
    fig = Figure(figsize=(size, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set(xlabel="predicted", ylabel="true", title=f"confusion matrix: {title}")
    if k <= 30:
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
    if k <= 20:
        top = cm.max() if cm.size else 0
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    color = "white" if cm[i, j] > top / 2 else "black"
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=color, size=8)
    fig.tight_layout()
    fig.savefig(path)


def print_result(res: EvalResult, console: Any = None) -> None:
    """Metrics table, per-class table (classifiers), and the files written."""
    from rich.console import Console
    from rich.table import Table

    from dlx.track.console import fmt

    con = console or Console(highlight=False)
    con.print(
        f"{res.run_dir}: {res.kind} checkpoint, step {res.step}, split {res.split}",
        markup=False,
        soft_wrap=True,
    )
    table = Table(title=f"eval ({res.split})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in res.metrics.items():
        table.add_row(k, fmt(v))
    con.print(table)
    if res.per_class:
        pc = Table(title="per class")
        for col in ("class", "precision", "recall", "f1", "support"):
            pc.add_column(col, justify="right")
        for row in res.per_class:
            pc.add_row(*(fmt(row[c]) for c in ("class", "precision", "recall", "f1", "support")))
        con.print(pc)
    con.print(f"wrote {res.json_path}", markup=False, soft_wrap=True)
    if res.png_path is not None:
        con.print(f"wrote {res.png_path}", markup=False, soft_wrap=True)
