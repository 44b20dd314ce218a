"""The sweep's Optuna study: the one shared record of every trial, and how workers claim work.

Workers (this process's --jobs slots, other `dlx sweep` processes, other machines given one
`sweep.storage`) share nothing but the study. Claiming relies on one guarantee of every Optuna
storage: trial numbers are unique and handed out in creation order (an RDB storage locks the
study row while it creates a trial; a journal is one append-only log).

grid/random: the trials are a fixed list of points. A worker creates a RUNNING trial for the
first point no trial covers (params and attributes in one storage write), then reads the study
again: if a lower-numbered trial covers the same point it withdraws its own (outcome
"dropped") and moves on. Of two workers racing for a point the lower number wins, and the
higher one always sees it, because the lower one was created first.

optuna: a worker asks for a trial (a new number), seeds TPE with that number (so two workers
never draw the same random start-up points, and one worker is reproducible), and withdraws it
if the trials ahead of it already fill sweep.trials. TPE may propose params a trial already has
(small categorical spaces): that result is copied rather than trained again.

Interrupted trials (Ctrl-C, or a worker that died: its pid is gone on this host, or no
heartbeat for sweep.stale_after seconds) count as not run, so a rerun runs them again.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlx.io import pid_alive
from dlx.sweep.plan import SweepPlan
from dlx.sweep.space import Param

OUTCOME = "dlx_outcome"  # user attr: finished|failed|pruned|interrupted|dropped
POINT = "dlx_point"  # user attr: index of the grid/random point a trial runs
NOT_RUN = ("interrupted", "dropped")  # outcomes that leave the trial's work to do
HOST = platform.node()
SETTLE_S = 10.0  # longest wait for an earlier trial to get its params (optuna mode)


@dataclass
class Claim:
    """A trial this worker owns and must run."""

    trial_id: int
    number: int
    params: dict[str, Any]
    overrides: list[str]


def open_storage(url: str) -> Any:
    """An RDB URL (sqlite:///..., postgresql://...) or the path of a journal file (fine on a
    shared filesystem: the journal's lock is a symlink, which NFS creates atomically)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if "://" in url:
        # SQLite allows one writer at a time: wait for the lock instead of failing.
        kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
        for attempt in range(5):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            except Exception as err:
                # Workers started together on a fresh database race to create its tables
                # ("table studies already exists", a UNIQUE constraint on alembic_version):
                # the loser just opens it again.
                race = ("already exists", "UNIQUE constraint", "Duplicate", "locked")
                if attempt == 4 or not any(r in str(err) for r in race):
                    raise
                time.sleep(0.2 + random.random())
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(url))


def outcome(t: Any) -> str:
    """finished | failed | pruned | interrupted | dropped | running."""
    from optuna.trial import TrialState

    if t.state == TrialState.RUNNING:
        return "running"
    if t.state == TrialState.WAITING:
        return "waiting"
    named = {TrialState.COMPLETE: "finished", TrialState.PRUNED: "pruned"}
    return t.user_attrs.get(OUTCOME) or named.get(t.state, "failed")


class SweepStudy:
    def __init__(self, plan: SweepPlan, worker: str | None = None) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        s = plan.settings
        self.plan = plan
        self.worker = worker or f"{HOST}:{os.getpid()}:{secrets.token_hex(2)}"
        self.storage = open_storage(plan.storage)
        pruner = (
            optuna.pruners.MedianPruner(
                n_startup_trials=s.prune_startup, n_warmup_steps=s.prune_warmup
            )
            if s.prune
            else optuna.pruners.NopPruner()
        )
        # load_if_exists: several workers may start at once; exactly one creates the study.
        self.study = optuna.create_study(
            study_name=plan.name,
            storage=self.storage,
            load_if_exists=True,
            direction="maximize" if s.maximize() else "minimize",
            pruner=pruner,
            sampler=optuna.samplers.RandomSampler(seed=s.seed),
        )
        self.study_id = self.storage.get_study_id_from_name(plan.name)
        self.dists = {p.key: p.distribution() for p in plan.params}
        self.active: dict[int, Claim] = {}  # by trial number
        self._lock = threading.Lock()
        self._handles: dict[int, Any] = {}

    # ----- reading
    def trials(self) -> list[Any]:
        return self.study.get_trials(deepcopy=False)

    def _settled(self, number: int) -> list[Any]:
        """The trials, once every RUNNING trial numbered below `number` has its params
        (optuna mode sets them just after creating the trial)."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            trials = self.trials()
            pending = [
                t
                for t in trials
                if t.number < number and outcome(t) == "running" and len(t.params) < len(self.dists)
            ]
            if not pending or time.monotonic() > deadline:
                return trials
            time.sleep(0.05)

    def _id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    # ----- claiming
    def claim(self, stop: threading.Event | None = None) -> Claim | None:
        """The next trial for this worker to run, or None when the sweep has nothing left
        that no one else is running."""
        while stop is None or not stop.is_set():
            with self._lock:
                self.reap()
                got = self._claim_point() if self.plan.points is not None else self._ask()
            if isinstance(got, Claim):
                self.active[got.number] = got
                return got
            if got is None:
                return None
            if isinstance(got, tuple):  # (my trial id, running twin number): wait, then copy
                self._wait_and_copy(*got, stop)
        return None

    def _stamp(self, values: dict[str, Any]) -> dict[str, Any]:
        return {
            "overrides": self.plan.overrides(values),
            "worker": self.worker,
            "host": HOST,
            "pid": os.getpid(),
            "heartbeat": time.time(),
        }

    def _claim_point(self) -> Claim | str | None:
        from optuna.trial import TrialState, create_trial

        points = self.plan.points
        assert points is not None
        covered = {t.user_attrs.get(POINT) for t in self.trials() if outcome(t) not in NOT_RUN}
        free = [i for i in range(len(points)) if i not in covered]
        if not free:
            return None
        i = free[0]
        template = create_trial(
            state=TrialState.RUNNING,
            params=points[i],
            distributions=self.dists,
            user_attrs={POINT: i, **self._stamp(points[i])},
        )
        trial_id = self.storage.create_new_trial(self.study_id, template_trial=template)
        number = self.storage.get_trial_number_from_id(trial_id)
        rivals = [
            t
            for t in self.trials()
            if t.number < number and t.user_attrs.get(POINT) == i and outcome(t) not in NOT_RUN
        ]
        if rivals:
            self._withdraw(trial_id, f"point {i} is trial {rivals[0].number}'s")
            return "retry"
        return Claim(trial_id, number, dict(points[i]), self.plan.overrides(points[i]))

    def _ask(self) -> Claim | str | tuple[int, int] | None:
        import optuna

        s = self.plan.settings
        if sum(outcome(t) not in NOT_RUN for t in self.trials()) >= self.plan.budget:
            return None
        trial = self.study.ask()  # a new number first, then params drawn with that number
        self.study.sampler = optuna.samplers.TPESampler(
            seed=s.seed + trial.number, n_startup_trials=s.startup, constant_liar=True
        )
        values = {p.key: _suggest(trial, p) for p in self.plan.params}
        for key, value in self._stamp(values).items():
            trial.set_user_attr(key, value)
        ahead = [
            t
            for t in self._settled(trial.number)
            if t.number < trial.number and outcome(t) not in NOT_RUN
        ]
        if len(ahead) >= self.plan.budget:
            self._withdraw(self._id(trial.number), "sweep.trials already reached")
            return None
        twin = next((t for t in ahead if t.params == values), None)
        if twin is not None:
            return (self._id(trial.number), twin.number)
        return Claim(self._id(trial.number), trial.number, values, self.plan.overrides(values))

    def _wait_and_copy(self, trial_id: int, twin_number: int, stop: threading.Event | None):
        """TPE proposed the params of trial `twin_number`: record its result, don't retrain."""
        from optuna.trial import TrialState

        number = self.storage.get_trial_number_from_id(trial_id)
        self.active[number] = Claim(trial_id, number, {}, [])  # keeps its heartbeat going
        twin_id = self._id(twin_number)
        try:
            while True:
                twin = self.storage.get_trial(twin_id)
                if outcome(twin) != "running" or (stop is not None and stop.is_set()):
                    break
                time.sleep(0.5)
            state = outcome(twin)
            if state in ("running", *NOT_RUN):  # we were stopped, or the twin never ran
                self._withdraw(trial_id, f"same params as trial {twin_number}, which did not end")
                return
            for key in ("run_dir", "step", "error"):
                self.storage.set_trial_user_attr(trial_id, key, twin.user_attrs.get(key))
            self.storage.set_trial_user_attr(trial_id, "duplicate_of", twin_number)
            self.storage.set_trial_user_attr(trial_id, OUTCOME, state)
            values = [twin.value] if twin.state == TrialState.COMPLETE else None
            self.storage.set_trial_state_values(trial_id, twin.state, values)
        finally:
            self.active.pop(number, None)

    def _withdraw(self, trial_id: int, why: str) -> None:
        from optuna.trial import TrialState

        self.storage.set_trial_user_attr(trial_id, OUTCOME, "dropped")
        self.storage.set_trial_user_attr(trial_id, "error", why)
        self.storage.set_trial_state_values(trial_id, TrialState.FAIL)

    # ----- liveness
    def reap(self) -> None:
        """Mark RUNNING trials of workers that are gone as interrupted, so they run again."""
        now = time.time()
        for t in self.trials():
            if outcome(t) != "running" or t.number in self.active:
                continue
            a = t.user_attrs
            if a.get("worker") == self.worker:
                continue
            beat = float(a.get("heartbeat") or t.datetime_start.timestamp())
            pid = a.get("pid")
            # Only a real pid (workers record os.getpid()) on this host proves a worker gone; a
            # malformed one is left to the heartbeat check.
            gone = a.get("host") == HOST and type(pid) is int and pid > 0 and not pid_alive(pid)
            if gone or now - beat > self.plan.settings.stale_after:
                why = f"worker {a.get('worker', '?')} stopped (no heartbeat for {now - beat:.0f}s)"
                self.mark_interrupted(self._id(t.number), why)

    def mark_interrupted(self, trial_id: int, why: str) -> None:
        from optuna.trial import TrialState

        try:
            self.storage.set_trial_user_attr(trial_id, OUTCOME, "interrupted")
            self.storage.set_trial_user_attr(trial_id, "error", why)
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except RuntimeError:  # another worker finished or reaped it meanwhile
            pass

    def heartbeat(self) -> None:
        for claim in list(self.active.values()):
            with contextlib.suppress(RuntimeError):  # finished meanwhile
                self.storage.set_trial_user_attr(claim.trial_id, "heartbeat", time.time())

    # ----- results
    def report(self, claim: Claim, step: int, value: float) -> bool:
        """Record an intermediate metric; True when the pruner says stop this trial."""
        import optuna

        handle = self._handles.get(claim.trial_id)
        if handle is None:
            handle = self._handles[claim.trial_id] = optuna.Trial(self.study, claim.trial_id)
        handle.report(value, step)
        return handle.should_prune()

    def finish(self, claim: Claim, result: Any) -> None:
        """Record a trial's result. `result` is a trial.TrialResult."""
        from optuna.trial import TrialState

        self.active.pop(claim.number, None)
        self._handles.pop(claim.trial_id, None)
        attrs = {
            OUTCOME: result.status,
            "run_dir": result.run_dir,
            "duration_s": round(result.duration_s, 3),
            "error": result.error,
            "step": result.step,
        }
        try:
            for key, value in attrs.items():
                self.storage.set_trial_user_attr(claim.trial_id, key, value)
            if result.status == "finished":
                self.study.tell(claim.number, result.value)
            elif result.status == "pruned":
                self.study.tell(claim.number, state=TrialState.PRUNED)
            else:
                self.study.tell(claim.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError) as err:
            # Reaped as dead by another worker (a clock far off, or a very long stall): the
            # study keeps its verdict; the run dir on disk still has this result.
            import sys

            print(f"warning: trial {claim.number}: {err}", file=sys.stderr)


def _suggest(trial: Any, p: Param) -> Any:
    d = p.distribution()
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(d, CategoricalDistribution):
        return trial.suggest_categorical(p.key, d.choices)
    if isinstance(d, IntDistribution):
        return trial.suggest_int(p.key, d.low, d.high, step=d.step, log=d.log)
    return trial.suggest_float(p.key, d.low, d.high, log=d.log)


def trial_rows(study: SweepStudy) -> list[dict[str, Any]]:
    """One dict per trial that ran or runs (withdrawn claims are bookkeeping, left out)."""
    metric = study.plan.settings.metric
    rows = []
    for t in sorted(study.trials(), key=lambda t: t.number):
        status = outcome(t)
        if status == "dropped":
            continue
        a = t.user_attrs
        row = {
            "trial": t.number,
            "status": status,
            "params": dict(t.params),
            "overrides": a.get("overrides"),
            "metric": metric,
            "value": t.value,
            "step": a.get("step"),
            "run_dir": a.get("run_dir"),
            "duration_s": a.get("duration_s"),
            "error": a.get("error"),
            "worker": a.get("worker"),
            "started": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
        }
        if "duplicate_of" in a:
            row["duplicate_of"] = a["duplicate_of"]
        rows.append(row)
    return rows
