"""What a person sees while a run trains: rich progress on a terminal, plain lines elsewhere.

Every line shown is also written to the run's train.log (plain text, no control characters).
"""

from __future__ import annotations

import logging
import os
import sys
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


def resolve_mode(mode: str) -> str:
    """`auto` is rich on an interactive terminal, plain in pipes and CI."""
    if mode != "auto":
        return mode
    interactive = sys.stdout.isatty() and not os.environ.get("CI")
    return "rich" if interactive else "plain"


def attach_log_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # libraries (absl) configure the root logger; keep ours to the file
    return handler


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


class RunConsole:
    def __init__(self, mode: str = "auto") -> None:
        self.mode = resolve_mode(mode)
        self.console = Console(highlight=False, quiet=self.mode == "none")
        self._progress: Progress | None = None
        self._task: Any = None

    def info(self, message: str) -> None:
        log.info(message)
        self.console.print(message, markup=False, soft_wrap=True)

    def table(self, title: str, rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
        self.console.print(title, markup=False, soft_wrap=True)
        table = Table()
        for i, h in enumerate(headers):
            table.add_column(h, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*(fmt(v) for v in row))
        self.console.print(table)
        log.info("%s: %s", title, "; ".join(" ".join(fmt(v) for v in r) for r in rows))

    def metrics_table(self, title: str, metrics: Mapping[str, Any]) -> None:
        self.table(title, [(k, v) for k, v in metrics.items()], ("metric", "value"))

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
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
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=steps, stats="")

    def advance(self, done: int, stats: Mapping[str, Any]) -> None:
        """Progress within the epoch; on a terminal only (plain mode logs lines instead)."""
        if self._progress is not None:
            text = " ".join(f"{k} {fmt(v)}" for k, v in stats.items())
            self._progress.update(self._task, completed=done, stats=text)

    def log_line(self, text: str) -> None:
        """A periodic train log line: printed in plain mode, only to train.log under rich."""
        log.info(text)
        if self.mode == "plain":
            self.console.print(text, markup=False, soft_wrap=True)

    def end_epoch(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
