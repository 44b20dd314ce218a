"""`dlx train`: compose (or reload, for resume=) the config, build the run, pick its kind
(a standard run or a continual stream), and train it inside one RunSession.

    build(cfg) -> fit.initial (state, resume point) -> RunSession -> fit.run -> summary
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dlx.errors import UserError


def make_fit(cfg: DictConfig) -> Any:
    """The kind of run the config asks for: a continual stream when `continual` is set."""
    if cfg.get("continual"):
        from dlx.continual.fit import StreamFit

        return StreamFit(cfg)
    from dlx.training.fit import StandardFit

    return StandardFit()


def train(
    cfg: DictConfig, overrides: Sequence[str] = (), resume_dir: Path | None = None
) -> tuple[Path | None, dict]:
    """Run (or resume) training; returns the run directory (None on processes other than 0)
    and the summary. Bad input raises a UserError before anything is written."""
    from dlx.session import RunSession, check_session
    from dlx.setup import build

    fit = make_fit(cfg)
    setup = build(cfg, schedule_steps=fit.schedule_steps)
    check_session(setup.cfg)
    lock = None
    if resume_dir is not None:
        lock = _lock_for_resume(resume_dir)
        done = _already_finished(resume_dir, setup.total_steps)
        if done is not None:
            if lock is not None:
                lock.release()
            return resume_dir, done
    try:
        state, start, host = fit.initial(setup, resume_dir)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    fields = fit.summary_fields()
    with RunSession(setup, state, overrides, resume_dir, start, fields, lock) as session:
        fit.run(setup, session, state, start, host)
    return session.run_dir, session.summary


def _lock_for_resume(run_dir: Path) -> Any:
    """The run dir's lock (process 0 only: the others write nothing), after checking that
    nothing in it leads outside it."""
    import jax

    if jax.process_index() != 0:
        return None
    from dlx.rundir import check_contained
    from dlx.runlock import RunLock

    check_contained(run_dir)
    return RunLock(run_dir).acquire()


def _already_finished(run_dir: Path, total_steps: int) -> dict | None:
    """The saved summary of a run that has nothing left to do (it finished and has trained
    every step the config asks for, or stopped early), said on the console; else None."""
    import json

    from dlx.track.console import RunConsole

    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("status") != "finished":
        return None
    steps = int(summary.get("steps") or 0)
    if steps < total_steps and not summary.get("early_stopped"):
        return None  # e.g. resumed with more trainer.epochs: there is more to train
    why = "it stopped early" if summary.get("early_stopped") else f"all {steps} steps are done"
    RunConsole("plain").info(
        f"{run_dir} already finished ({why}); nothing to do. To train on, resume with more "
        f"steps (trainer.epochs=N or trainer.max_steps=N), or evaluate it: dlx eval {run_dir}"
    )
    return {**summary, "exit_code": 0}


def resume_config(run_dir: str | Path, overrides: Sequence[str]) -> tuple[DictConfig, Path]:
    """The saved config of the run to resume (overrides on top, e.g. trainer.epochs=10)."""
    from dlx.restore import find_run_dir, load_config

    path = find_run_dir(run_dir)
    return load_config(path, overrides), path


def train_overrides(
    overrides: Sequence[str], config_dir: Path | None = None
) -> tuple[Path | None, dict]:
    """`dlx train KEY=VALUE...` as a call: `resume=<run dir>` continues that run (the other
    overrides change its saved config), else the recipe is composed from scratch."""
    resume = [o.split("=", 1)[1] for o in overrides if o.startswith("resume=")]
    rest = [o for o in overrides if not o.startswith("resume=")]
    if resume:
        cfg, run_dir = resume_config(resume[-1], [o for o in rest if not o.startswith("recipe=")])
        asked = [o.split("=", 1)[1] for o in rest if o.startswith("recipe=")]
        if asked and asked[-1] != cfg.recipe:
            raise UserError(
                f"resume={run_dir} is a run of recipe '{cfg.recipe}', not '{asked[-1]}'",
                hint=f"drop recipe= to resume it, or start a new run: dlx train recipe={asked[-1]}",
            )
        return train(cfg, rest, resume_dir=run_dir)
    from dlx.config import compose

    return train(compose(list(overrides), config_dir), overrides)


def train_command(overrides: Sequence[str], config_dir: Path | None = None) -> int:
    """The exit code of `dlx train`: 0 finished, 3 diverged, 128+N preempted by signal N."""
    _, summary = train_overrides(overrides, config_dir)
    return int(summary.get("exit_code", 0))
