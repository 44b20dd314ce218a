"""What a sweep shows and leaves behind: trials.jsonl, best.yaml, the live table while it runs
(plain lines in pipes and CI) and the final leaderboard."""

from __future__ import annotations

import json
import math
import os
import shlex
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from dlx.io import atomic_write
from dlx.sweep.plan import SweepPlan

STATUS_STYLE = {
    "finished": "green",
    "running": "cyan",
    "pruned": "yellow",
    "failed": "red",
    "interrupted": "magenta",
}


def ranked(rows: Sequence[dict[str, Any]], maximize: bool) -> list[dict[str, Any]]:
    """Finished trials, best first (ties: earlier trial first)."""
    done = [r for r in rows if r["status"] == "finished" and _finite(r["value"])]
    sign = -1 if maximize else 1
    return sorted(done, key=lambda r: (sign * r["value"], r["trial"]))


def write_outputs(plan: SweepPlan, rows: Sequence[dict[str, Any]]) -> None:
    """trials.jsonl (every trial) and best.yaml (once a trial finished), rewritten whole from
    the study each time, so every worker's copy is complete and never half-written."""
    text = "".join(json.dumps(r, default=str) + "\n" for r in rows)
    atomic_write(plan.sweep_dir / "trials.jsonl", text)
    top = ranked(rows, plan.settings.maximize())
    if not top:
        return
    b = top[0]
    overrides = list(b["overrides"] or [])
    best = {
        "metric": plan.settings.metric,
        "direction": plan.settings.direction,
        "value": b["value"],
        "trial": b["trial"],
        "params": b["params"],
        "overrides": overrides,
        "command": " ".join(["dlx", "train", *(shlex.quote(o) for o in overrides)]),
        "run_dir": b["run_dir"],
        "counts": dict(Counter(r["status"] for r in rows)),
    }
    atomic_write(plan.sweep_dir / "best.yaml", yaml.safe_dump(best, sort_keys=False))


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


class SweepView:
    """A live rich table on a terminal; one line per trial start/end elsewhere."""

    def __init__(self, plan: SweepPlan, console: Console | None = None) -> None:
        self.plan = plan
        self.console = console or Console(highlight=False)
        self.live = self.console.is_terminal and not os.environ.get("CI")
        self._live: Any = None

    def start(self) -> None:
        if self.live:
            from rich.live import Live

            # transient: the live table gives way to the leaderboard at the end.
            self._live = Live(
                self._table([]), console=self.console, refresh_per_second=2, transient=True
            )
            self._live.start()

    def update(self, rows: Sequence[dict[str, Any]]) -> None:
        if self._live is not None:
            self._live.update(self._table(rows))

    def stop(self, rows: Sequence[dict[str, Any]]) -> None:
        if self._live is not None:
            self._live.update(self._table(rows))
            self._live.stop()
            self._live = None

    def line(self, text: str) -> None:
        """A plain progress line (not shown under the live table, which says the same)."""
        if not self.live:
            self.console.print(text, markup=False, soft_wrap=True)

    def _title(self, rows: Sequence[dict[str, Any]]) -> str:
        s = self.plan.settings
        counts = Counter(r["status"] for r in rows)
        ended = sum(n for k, n in counts.items() if k not in ("running", "interrupted"))
        title = f"sweep {self.plan.name}: {ended}/{self.plan.budget} done"
        title += "".join(f", {counts[k]} {k}" for k in ("running", "pruned", "failed") if counts[k])
        top = ranked(rows, s.maximize())
        if top:
            title += f"; best {s.metric} {fmt(top[0]['value'])} (trial {top[0]['trial']})"
        return title

    def _table(self, rows: Sequence[dict[str, Any]], limit: int = 15) -> Group:
        running = [r for r in rows if r["status"] == "running"]
        recent = [r for r in rows if r["status"] != "running"][-(limit - len(running)) :]
        return self._trial_table(self._title(rows), [*running, *reversed(recent)])

    def _trial_table(self, title: str, rows: Sequence[dict[str, Any]]) -> Group:
        # The title as a line of its own: a table title wraps at the table's width.
        table = Table()
        for col in ("trial", "status", *(p.key for p in self.plan.params)):
            table.add_column(col)
        table.add_column(self.plan.settings.metric, justify="right")
        table.add_column("time", justify="right")
        for r in rows:
            style = STATUS_STYLE.get(r["status"], "")
            dur = f"{r['duration_s']:.1f}s" if r.get("duration_s") is not None else ""
            table.add_row(
                str(r["trial"]),
                f"[{style}]{r['status']}[/]" if style else r["status"],
                *(fmt(r["params"].get(p.key)) for p in self.plan.params),
                fmt(r["value"]),
                dur,
            )
        return Group(Text(title), table)

    def leaderboard(self, rows: Sequence[dict[str, Any]], top: int = 10) -> None:
        s = self.plan.settings
        best = ranked(rows, s.maximize())[:top]
        counts = Counter(r["status"] for r in rows)
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        self.console.print(
            self._trial_table(f"leaderboard ({s.metric}, {s.direction}); {summary}", best)
        )
        for r in [r for r in rows if r["status"] == "failed"][:5]:
            self.console.print(f"trial {r['trial']} failed: {r['error']}", markup=False)
        if best:
            b = best[0]
            cmd = " ".join(["dlx", "train", *(shlex.quote(o) for o in b["overrides"] or [])])
            self.console.print(f"best: {cmd}", markup=False, soft_wrap=True)
        self.console.print(f"sweep dir: {self.plan.sweep_dir}", markup=False, soft_wrap=True)


def rows_from_file(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
