"""One trial = one `dlx train` process with the trial's overrides, its run dir under the
sweep dir. While it runs, its metrics.jsonl is tailed and each eval of the sweep metric is
reported (for pruning); afterwards its summary.json gives the result.

A trial is stopped (pruned, or the sweep interrupted) with SIGINT, which `dlx train` turns into
a clean exit (summary.json "failed", checkpoints closed), then SIGKILL after a grace period.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dlx.io import PARENT_ENV, read_jsonl
from dlx.sweep.resources import Slot

GRACE_S = 15.0  # after SIGINT, before SIGKILL
POLL_S = 0.25


@dataclass
class TrialJob:
    number: int
    overrides: list[str]  # everything `dlx train` gets, outputs.dir included
    params: dict[str, Any]
    out_dir: Path  # <sweep dir>/trials/<number>
    metric: str
    maximize: bool
    config_dir: Path | None = None


@dataclass
class TrialResult:
    status: str  # finished | failed | pruned | interrupted
    value: float | None = None
    error: str | None = None
    run_dir: str | None = None
    duration_s: float = 0.0
    step: int | None = None  # the step of the value


Report = Callable[[int, float], bool]  # (step, value) -> True: prune now


class TrialRunner(Protocol):
    def run(self, job: TrialJob, slot: Slot, report: Report, stop: threading.Event) -> TrialResult:
        """Run the trial; return its result. Must return soon after `stop` is set."""
        ...


class SubprocessRunner:
    """Runs `python -m dlx train ...` (the prefix is injectable for tests)."""

    def __init__(self, prefix: list[str] | None = None, grace_s: float = GRACE_S) -> None:
        self.prefix = prefix or [sys.executable, "-m", "dlx"]
        self.grace_s = grace_s

    def run(self, job: TrialJob, slot: Slot, report: Report, stop: threading.Event) -> TrialResult:
        t0 = time.monotonic()
        job.out_dir.mkdir(parents=True, exist_ok=True)
        argv = [*self.prefix, "train", *job.overrides]
        if job.config_dir is not None:
            argv += ["--config-dir", str(Path(job.config_dir).resolve())]
        tail = MetricsTail(job.out_dir, job.metric)
        stopped = None  # "pruned" | "interrupted"
        last: tuple[int, float] | None = None
        with (job.out_dir / "output.log").open("w") as log:
            proc = subprocess.Popen(
                slot.command(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # DLX_PARENT_PID: the trial asks for SIGTERM if this worker dies, even by
                # SIGKILL (dlx.io.die_with_parent); an orphaned trial would train to the end
                # while its point is run again. Its own process group: a Ctrl-C reaches the
                # sweep, which stops each trial with one SIGINT.
                env={**slot.env(_child_env()), PARENT_ENV: str(os.getpid())},
                start_new_session=True,
            )
            try:
                while proc.poll() is None and stopped is None:
                    for step, value in tail.read():
                        last = (step, value)
                        if report(step, value):
                            stopped = "pruned"
                            break
                    if stopped is None and stop.wait(POLL_S):
                        stopped = "interrupted"
                if stopped is None:
                    # The last evals, written just before exit: the pruner compares later
                    # trials against finished trials' whole curves.
                    for step, value in tail.read():
                        last = (step, value)
                        report(step, value)
            finally:
                if proc.poll() is None:
                    _terminate(proc, self.grace_s)
        dt = time.monotonic() - t0
        run_dir = tail.run_dir()
        if stopped == "pruned":
            assert last is not None
            return TrialResult("pruned", last[1], None, _str(run_dir), dt, last[0])
        if stopped == "interrupted" or proc.returncode in (130, -signal.SIGINT):
            return TrialResult("interrupted", None, "interrupted", _str(run_dir), dt)
        if proc.returncode != 0:
            error = _error_from_log(job.out_dir / "output.log", proc.returncode)
            return TrialResult("failed", None, error, _str(run_dir), dt)
        return read_result(run_dir, job.metric, job.maximize, dt)


def read_result(run_dir: Path | None, metric: str, maximize: bool, dt: float) -> TrialResult:
    """The result of a `dlx train` run that exited 0: the best `metric` over its evals, or
    failed: no such metric, or diverged (a non-finite loss or metric)."""
    if run_dir is None:
        return TrialResult("failed", None, "dlx train exited 0 but wrote no run dir", None, dt)
    where = str(run_dir)
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError) as err:
        return TrialResult("failed", None, f"unreadable summary.json: {err}", where, dt)
    if summary.get("status") != "finished":
        why = summary.get("error") or f"run status {summary.get('status')!r}"
        return TrialResult("failed", None, why, where, dt)
    records = read_records(run_dir / "metrics.jsonl")
    # Divergence shows in the loss first (a NaN loss can still score 10% accuracy).
    for rec in records:
        for key in ("train/loss", "val/loss", metric):
            if key in rec and not math.isfinite(_number(rec[key])):
                why = f"diverged: {key} is {rec[key]} at step {rec.get('step')}"
                return TrialResult("failed", None, why, where, dt)
    value, step = best_of(records, metric, maximize)
    best = summary.get("best") or {}
    if value is None and metric in best:  # no metrics.jsonl: the trainer's own best
        value, step = _number(best[metric]), best.get("step")
    if value is None:
        logged = sorted({k for r in records for k in r if "/" in k})
        why = f"the run logged no '{metric}' (it logged: {', '.join(logged) or 'nothing'})"
        return TrialResult("failed", None, why, where, dt)
    if not math.isfinite(value):
        return TrialResult("failed", None, f"diverged: {metric} is {value}", where, dt)
    return TrialResult("finished", value, None, where, dt, step)


def read_records(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records; a torn last line (a killed writer) is skipped."""
    return read_jsonl(path)


def best_of(
    records: list[dict[str, Any]], metric: str, maximize: bool
) -> tuple[float | None, int | None]:
    """Best value of `metric` over the records, with its step."""
    best: tuple[float | None, int | None] = (None, None)
    for rec in records:
        if metric in rec:
            value = _number(rec[metric])
            if best[0] is None or _better(value, best[0], maximize):
                best = (value, rec.get("step"))
    return best


def _better(a: float, b: float, maximize: bool) -> bool:
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a > b if maximize else a < b


def _number(v: Any) -> float:
    """metrics.jsonl writes NaN/inf as strings (JSON has none)."""
    return float(v)


class MetricsTail:
    """New (step, value) records of `metric` in the trial's metrics.jsonl, as it grows."""

    def __init__(self, out_dir: Path, metric: str) -> None:
        self.out_dir, self.metric = out_dir, metric
        self._path: Path | None = None
        self._offset = 0
        self._steps: set[int] = set()

    def run_dir(self) -> Path | None:
        # `dlx train` makes exactly one <outputs.dir>/<recipe>/<time>_<id>/ per run, and
        # writes summary.json ("running") and metrics.jsonl into it before training.
        for name in ("summary.json", "metrics.jsonl"):
            found = sorted(self.out_dir.glob(f"*/*/{name}"))
            if found:
                return found[0].parent
        return None

    def read(self) -> list[tuple[int, float]]:
        if self._path is None:
            run = self.run_dir()
            if run is None:
                return []
            self._path = run / "metrics.jsonl"
        try:
            with self._path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits
        self._offset += len(complete)
        out = []
        for line in complete.decode(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict) or self.metric not in rec:
                continue
            step = rec.get("step")
            # The test record repeats the last val step: report each step once.
            if isinstance(step, int) and step not in self._steps:
                self._steps.add(step)
                out.append((step, _number(rec[self.metric])))
        return out


def _terminate(proc: subprocess.Popen, grace_s: float, first_wait_s: float = 0.0) -> None:
    """SIGINT (a clean stop for `dlx train`), then SIGKILL after grace_s."""
    try:
        proc.wait(first_wait_s)
        return
    except subprocess.TimeoutExpired:
        pass
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _child_env() -> dict[str, str]:
    """The parent's environment, plus the folder dlx is imported from on PYTHONPATH so the
    child imports the same dlx (a source checkout run with PYTHONPATH or from its root)."""
    import dlx

    env = dict(os.environ)
    root = str(Path(dlx.__file__).resolve().parent.parent)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    return env


def _error_from_log(path: Path, code: int) -> str:
    """`dlx train`'s own 'error: ...' line (user errors), else the last line (a traceback's
    exception), with the exit code."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    errors = [ln for ln in lines if ln.startswith("error:")]
    text = errors[-1] if errors else (lines[-1] if lines else "no output")
    return f"exit {code}: {text}"


def _str(p: Path | None) -> str | None:
    return str(p) if p is not None else None
