"""`dlx sweep`: plan the search, then run trials on --jobs slots until the study has nothing
left for this worker; write trials.jsonl, best.yaml and plots; print the leaderboard.

Each slot is a thread that claims a trial from the study, runs it (a `dlx train` process on the
slot's cores), and records the result. The main thread only refreshes the live table and
catches Ctrl-C: it then stops every running trial and marks it interrupted, so rerunning the
same command runs exactly those and the ones never started.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dlx.errors import UserError
from dlx.sweep.plan import SweepPlan, make_plan, write_spec
from dlx.sweep.plots import write_plots
from dlx.sweep.report import SweepView, fmt, write_outputs
from dlx.sweep.resources import Slot, make_slots
from dlx.sweep.space import point_overrides
from dlx.sweep.study import NOT_RUN, POINT, Claim, SweepStudy, open_storage, outcome, trial_rows
from dlx.sweep.trial import SubprocessRunner, TrialJob, TrialResult, TrialRunner

HEARTBEAT_S = 30.0


def run_sweep(
    overrides: Sequence[str],
    config_dir: Path | None = None,
    jobs: int = 1,
    dry_run: bool = False,
    name: str | None = None,
    runner: TrialRunner | None = None,
    console: Console | None = None,
) -> Path:
    """Run (or resume, or join) the sweep the overrides describe; returns the sweep dir.
    Raises KeyboardInterrupt after a Ctrl-C, once the sweep is left resumable."""
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}", hint="e.g. --jobs 2")
    plan = make_plan(overrides, config_dir, name)
    console = console or Console(highlight=False)
    if dry_run:
        print_plan(plan, console)
        return plan.sweep_dir
    return execute(plan, ["dlx", "sweep", *overrides], jobs, runner, console)


def execute(
    plan: SweepPlan,
    command: Sequence[str],
    jobs: int = 1,
    runner: TrialRunner | None = None,
    console: Console | None = None,
) -> Path:
    """Run a planned sweep as one worker (several may run one plan at once, anywhere)."""
    console = console or Console(highlight=False)
    write_spec(plan, command)
    study = SweepStudy(plan)
    view = SweepView(plan, console)
    slots = make_slots(jobs)
    console.print(
        f"sweep {plan.name}: {plan.settings.type}, {plan.budget} trials, "
        f"{plan.settings.metric} ({plan.settings.direction}), {jobs} at once "
        f"[{'; '.join(s.describe() for s in slots)}]\nsweep dir: {plan.sweep_dir}",
        markup=False,
        soft_wrap=True,
    )
    worker = Worker(plan, study, runner or SubprocessRunner(), slots, view)
    interrupted = worker.run()
    rows = trial_rows(study)
    write_outputs(plan, rows)
    write_plots(plan, rows)
    view.leaderboard(rows)
    if interrupted:
        console.print("interrupted: rerun the same command to resume", markup=False)
        raise KeyboardInterrupt
    return plan.sweep_dir


class Worker:
    def __init__(
        self,
        plan: SweepPlan,
        study: SweepStudy,
        runner: TrialRunner,
        slots: list[Slot],
        view: SweepView,
    ) -> None:
        self.plan, self.study, self.runner, self.slots, self.view = plan, study, runner, slots, view
        self.stop = threading.Event()
        self._errors: list[BaseException] = []
        self._write_lock = threading.Lock()

    def run(self) -> bool:
        """Run until no trial is left for this worker; True if interrupted (Ctrl-C)."""
        threads = [
            threading.Thread(target=self._slot, args=(s,), name=f"sweep-slot-{s.index}")
            for s in self.slots
        ]
        beat = threading.Thread(target=self._heartbeat, name="sweep-heartbeat", daemon=True)
        interrupted = False
        self.view.start()
        try:
            for t in threads:
                t.start()
            beat.start()
            while any(t.is_alive() for t in threads):
                time.sleep(0.5)
                if self.view.live:
                    self.view.update(trial_rows(self.study))
        except KeyboardInterrupt:
            interrupted = True
            self.stop.set()
            self._join(threads)
        finally:
            self.stop.set()
            self.view.stop(trial_rows(self.study))
        if self._errors:
            raise self._errors[0]
        return interrupted

    def _join(self, threads: list[threading.Thread]) -> None:
        """Wait for the slots to stop their trials; a second Ctrl-C does not cut this short
        (the trials would be left RUNNING in the study until they go stale)."""
        for t in threads:
            while t.is_alive():
                try:
                    t.join(0.5)
                except KeyboardInterrupt:
                    self.view.line("stopping: waiting for running trials to exit")

    def _slot(self, slot: Slot) -> None:
        try:
            while not self.stop.is_set():
                claim = self.study.claim(self.stop)
                if claim is None:
                    return
                self._run_trial(claim, slot)
        except BaseException as err:  # a bug or a storage failure: stop the sweep, report it
            self._errors.append(err)
            self.stop.set()

    def _run_trial(self, claim: Claim, slot: Slot) -> None:
        s = self.plan.settings
        out_dir = self.plan.trial_dir(claim.number)
        job = TrialJob(
            number=claim.number,
            overrides=[*claim.overrides, f"outputs.dir={_quote(str(out_dir))}"],
            params=claim.params,
            out_dir=out_dir,
            metric=s.metric,
            maximize=s.maximize(),
            config_dir=self.plan.config_dir,
        )
        swept = " ".join(point_overrides(self.plan.params, claim.params))
        self.view.line(f"trial {claim.number} started ({slot.describe()}): {swept}")
        try:
            result = self.runner.run(
                job, slot, lambda step, value: self.study.report(claim, step, value), self.stop
            )
        except Exception as err:  # the runner broke (cannot spawn, ...): this trial failed
            result = TrialResult("failed", error=f"{type(err).__name__}: {err}")
        self.study.finish(claim, result)
        value = f" {s.metric} {fmt(result.value)}" if result.value is not None else ""
        error = f": {result.error}" if result.error and result.status == "failed" else ""
        self.view.line(
            f"trial {claim.number} {result.status}{value} ({result.duration_s:.1f}s){error}"
        )
        with self._write_lock:
            write_outputs(self.plan, trial_rows(self.study))

    def _heartbeat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            self.study.heartbeat()


def _quote(path: str) -> str:
    """A path as a Hydra override value (quoted when it has characters Hydra parses)."""
    if re.fullmatch(r"[A-Za-z0-9_/.\-]+", path):
        return path
    return "'" + path.replace("\\", "\\\\").replace("'", "\\'") + "'"


def print_plan(plan: SweepPlan, console: Console) -> None:
    """--dry-run: the trials (grid/random) or the space (optuna), with the status of each
    trial when the sweep already ran here. Creates nothing."""
    s = plan.settings
    console.print(
        f"sweep {plan.name}: {s.type}, {plan.budget} trials, {s.metric} ({s.direction}), "
        f"seed {s.seed}, pruning {'on' if s.prune else 'off'}\n"
        f"sweep dir: {plan.sweep_dir}\nstorage: {plan.storage}\n"
        f"every trial: dlx train {' '.join(plan.fixed)}",
        markup=False,
        soft_wrap=True,
    )
    done = _existing_status(plan)
    if plan.points is None:
        table = Table(title=f"search space (TPE, {s.startup} random start-up trials)")
        for col in ("parameter", "values"):
            table.add_column(col)
        for p in plan.params:
            table.add_row(p.key, p.describe())
        console.print(table)
        if done:
            console.print(f"{sum(done.values())} trials already counted", markup=False)
        return
    table = Table(title="trials")
    for col in ("point", "status", "overrides"):
        table.add_column(col)
    for i, point in enumerate(plan.points):
        status = done.get(i, "to run") if done else "to run"
        table.add_row(str(i), str(status), " ".join(point_overrides(plan.params, point)))
    console.print(table)


def _existing_status(plan: SweepPlan) -> dict[Any, Any]:
    """Per point: the status of the trial that covers it (grid/random); per outcome: a
    count (optuna). Empty unless this sweep's journal already exists (opening an RDB URL or a
    missing journal would create it, and a dry run writes nothing)."""
    if "://" in plan.storage or not Path(plan.storage).is_file():
        return {}
    storage = open_storage(plan.storage)
    try:
        study_id = storage.get_study_id_from_name(plan.name)
    except KeyError:
        return {}
    trials = storage.get_all_trials(study_id, deepcopy=False)
    if plan.points is None:
        return {"counted": sum(outcome(t) not in NOT_RUN for t in trials)}
    status: dict[Any, Any] = {}
    for t in trials:
        o = outcome(t)
        if o not in NOT_RUN:
            status[t.user_attrs.get(POINT)] = o
    return status
