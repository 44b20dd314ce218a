"""`dlx train`: compose (or reload, for resume=) the config, build the run, pick its kind
(a standard run or a continual stream), and train it inside one RunSession.

    build(cfg) -> fit.initial (state, resume point) -> RunSession -> fit.run -> summary
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig


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
    state, start, host = fit.initial(setup, resume_dir)
    fields = fit.summary_fields()
    with RunSession(setup, state, overrides, resume_dir, start, fields) as session:
        fit.run(setup, session, state, start, host)
    return session.run_dir, session.summary


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
        cfg, run_dir = resume_config(resume[-1], rest)
        return train(cfg, rest, resume_dir=run_dir)
    from dlx.config import compose

    return train(compose(list(overrides), config_dir), overrides)


def train_command(overrides: Sequence[str], config_dir: Path | None = None) -> int:
    """The exit code of `dlx train`: 0 finished, 3 diverged, 128+N preempted by signal N."""
    _, summary = train_overrides(overrides, config_dir)
    return int(summary.get("exit_code", 0))
