"""What a person sees while a run trains: rich progress on a terminal, plain lines elsewhere.

One line per epoch (train metrics, val metrics, `*` when the best metric improved, epoch
time, samples/s), as Keras prints it: on a terminal the epoch's live bar is replaced by that
line when the epoch ends. Tables only where they help: the parameters at start (one line in
plain mode) and the final results. Every line shown is also written to the run's train.log
(plain text, no control characters), which also gets the periodic (`trainer.log_every`)
train lines; the plain console shows those only as a heartbeat in a long epoch.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

log = logging.getLogger("dlx")

SHORT = {"accuracy": "acc"}  # metric names on the epoch line
# Plain mode: a periodic train line reaches the console only this long after the last line
# shown, so that short epochs print one line each and a long one still shows it is alive.
HEARTBEAT_S = 30.0
BEST_MARK = "*"


def resolve_mode(mode: str) -> str:
    """`auto` is rich on an interactive terminal, plain in pipes and CI."""
    if mode != "auto":
        return mode
    interactive = sys.stdout.isatty() and not os.environ.get("CI")
    return "rich" if interactive else "plain"


class _LogFile(logging.FileHandler):
    """train.log, opened without following a symlink (see dlx.io.open_append)."""

    def _open(self) -> Any:
        from dlx.io import open_append

        return open_append(Path(self.baseFilename))


def attach_log_file(path: Path) -> logging.Handler:
    handler = _LogFile(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # libraries (absl) configure the root logger; keep ours to the file
    return handler


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def short(name: str) -> str:
    """`accuracy` -> `acc`, also inside a name (`task0_accuracy` -> `task0_acc`)."""
    for long, brief in SHORT.items():
        name = name.replace(long, brief)
    return name


# Val record entries left off the epoch line: bookkeeping, and a continual run's per-task
# losses (its line is about the accuracy row R[t]; every value is in metrics.jsonl).
_HIDDEN = re.compile(r"(^|_)count$|^task$|^task\d+_loss$")


def epoch_line(
    label: str,
    epoch: int,
    epochs: int,
    train: Mapping[str, float],
    val: Mapping[str, Any] | None = None,
    best: bool = False,
) -> str:
    """`epoch 3/40 loss 0.4123 acc 0.8750 | val loss 0.3012 acc 0.9097 *` (`RunConsole.end_epoch`
    adds the time and samples/s). `val` holds `split/metric` entries; `best`: the run's best
    metric improved at this eval."""
    parts = [f"{label}epoch {epoch}/{epochs}"]
    parts += [f"{short(k)} {fmt(v)}" for k, v in train.items()]
    groups: dict[str, list[str]] = {}
    for key, value in (val or {}).items():
        split, _, name = key.rpartition("/")
        if isinstance(value, bool) or not isinstance(value, int | float) or _HIDDEN.search(name):
            continue
        groups.setdefault(split, []).append(f"{short(name)} {fmt(value)}")
    for split, shown in groups.items():
        parts.append("|")
        parts += [split, *shown] if split else shown
    if best:
        parts.append(BEST_MARK)
    return " ".join(parts)


class RunConsole:
    def __init__(self, mode: str = "auto") -> None:
        self.mode = resolve_mode(mode)
        self.console = Console(highlight=False, quiet=self.mode == "none")
        self._progress: Progress | None = None
        self._task: Any = None
        self._t_epoch: float | None = None
        self._t_shown = time.monotonic()  # when the plain console last printed a line

    def _print(self, text: str) -> None:
        self._t_shown = time.monotonic()
        self.console.print(text, markup=False, soft_wrap=True)

    def info(self, message: str) -> None:
        log.info(message)
        self._print(message)

    def note(self, message: str) -> None:
        """To train.log only: detail the console leaves out."""
        log.info(message)

    def table(
        self,
        title: str,
        rows: Sequence[Sequence[Any]],
        headers: Sequence[str],
        plain: str | None = None,
    ) -> None:
        """A table on the console (with `plain` given: that one line instead, in plain mode),
        its rows as one line in train.log."""
        log.info("%s: %s", title, "; ".join(" ".join(fmt(v) for v in r) for r in rows))
        if plain is not None and self.mode == "plain":
            self._print(plain)
            return
        self._print(title)
        table = Table()
        for i, h in enumerate(headers):
            table.add_column(h, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*(fmt(v) for v in row))
        self.console.print(table)

    def metrics_table(self, title: str, metrics: Mapping[str, Any]) -> None:
        self.table(title, [(k, v) for k, v in metrics.items()], ("metric", "value"))

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self._t_epoch = time.perf_counter()
        if self.mode != "rich":
            return
        self._progress = Progress(
            TextColumn(f"epoch {epoch}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,  # end_epoch prints the epoch's line in its place
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=steps, stats="")

    def advance(self, done: int, stats: Mapping[str, Any]) -> None:
        """Progress within the epoch; on a terminal only (plain mode logs lines instead)."""
        if self._progress is not None:
            text = " ".join(f"{k} {fmt(v)}" for k, v in stats.items())
            self._progress.update(self._task, completed=done, stats=text)

    def log_line(self, text: str) -> None:
        """A periodic train line: to train.log; on the plain console only as a heartbeat
        (HEARTBEAT_S after the last line shown); under rich the bar shows the same numbers."""
        log.info(text)
        if self.mode == "plain" and time.monotonic() - self._t_shown >= HEARTBEAT_S:
            self._print(text)

    def end_epoch(self, line: str | None = None, samples_per_sec: float | None = None) -> None:
        """Close the epoch's bar; with `line` (see `epoch_line`), show it with the epoch's
        wall time (training, eval and checkpoint) and training throughput, and write it to
        train.log."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if line is not None:
            tail = []
            if self._t_epoch is not None:
                tail.append(f"{time.perf_counter() - self._t_epoch:.2f}s")
            if samples_per_sec is not None and math.isfinite(samples_per_sec):
                tail.append(f"{samples_per_sec:.0f} samples/s")
            self.info(" | ".join([line, " ".join(tail)]) if tail else line)
        self._t_epoch = None
