"""Load a finished (or interrupted) run back: its config, data, model and a checkpoint.

Used by `dlx eval`, `dlx explain`, `dlx sample`, `init_from=` and resume. Reads YAML, JSON
and Orbax arrays only: nothing loaded from disk can run code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from dlx.errors import UserError, first_line


def find_run_dir(path: str | Path) -> Path:
    """The run dir for a run dir, its checkpoints/ dir or one checkpoint step inside it."""
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise UserError(f"no such run directory: {p}", hint="list runs with `dlx runs`")
    for candidate in (p, *p.parents):
        if (candidate / "config.yaml").is_file() and (candidate / "checkpoints").is_dir():
            return candidate
    raise UserError(
        f"{p} is not a dlx run directory (no config.yaml and checkpoints/ found)",
        hint="pass outputs/<recipe>/<time>_<id>; list runs with `dlx runs`",
    )


def load_config(run_dir: Path, overrides: Sequence[str] = ()) -> DictConfig:
    """The run's saved config with `key=value` overrides (e.g. another data.path) applied."""
    from dlx.config.compose import validate

    cfg = read_saved_config(run_dir / "config.yaml")
    OmegaConf.set_struct(cfg, True)
    for o in overrides:
        key, sep, value = o.partition("=")
        if not sep:
            raise UserError(f"override '{o}' is not key=value")
        if OmegaConf.select(cfg, key.lstrip("+"), default="__missing__") == "__missing__":
            raise UserError(
                f"unknown config key '{key}' in the run's config.yaml",
                hint=f"see {run_dir / 'config.yaml'}",
            )
        # The same typing as Hydra's grammar for plain values: 32 -> int, [8,16] -> list.
        OmegaConf.update(cfg, key.lstrip("+"), yaml.safe_load(value), merge=False)
    OmegaConf.set_struct(cfg, False)
    return validate(cfg)


def read_saved_config(path: Path) -> DictConfig:
    """A run's config.yaml, read as plain YAML data (OmegaConf's loader is a safe one: a
    `!!python/object` tag is an error, never a call): a UserError when it is not a mapping."""
    try:
        cfg = OmegaConf.load(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError) as err:
        raise UserError(
            f"cannot read {path}: {first_line(err)}",
            hint="the run's config.yaml is damaged; restore it from a copy (dlx writes it "
            "once, at the start of the run) or start a new run",
        ) from err
    if not isinstance(cfg, DictConfig) or "recipe" not in cfg:
        raise UserError(
            f"{path} is not a dlx run config (expected a mapping with recipe, model, data...)",
            hint="restore the run's config.yaml from a copy, or start a new run",
        )
    return cfg


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: DictConfig
    setup: Any  # dlx.setup.Setup (data, task, strategy on one device)
    state: Any  # TrainState on one device
    meta: dict
    step: int

    @property
    def data(self) -> Any:
        return self.setup.data

    @property
    def task(self) -> Any:
        return self.setup.task

    @property
    def model(self) -> Any:
        """The task's Flax module; a model with state besides its params (BatchNorm
        statistics) comes bound to this checkpoint's, so `model.apply({"params": p}, x)`
        evaluates it as trained."""
        from dlx.tasks.supervised import with_model_state

        model = getattr(self.setup.task, "model", None)
        if model is None or not self.state.model_state:
            return model
        return with_model_state(model, self.state.model_state)


def _import_from_launch_dir(run_dir: Path) -> None:
    """A run whose model or data is the user's own code (`_target_`) imports it from the
    folder the run was launched from (meta.json "cwd"), wherever it is reloaded from; the
    current folder still comes first."""
    import json
    import sys

    try:
        cwd = json.loads((run_dir / "meta.json").read_text()).get("cwd")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(cwd, str) and Path(cwd).is_dir() and cwd not in sys.path:
        sys.path.append(cwd)


def load_run(
    path: str | Path, overrides: Sequence[str] = (), kind: str = "best", step: int | None = None
) -> LoadedRun:
    """Config, data, task and the `kind` (best/latest) checkpoint (or `step`) of a run, on one
    device."""
    from dlx.checkpoint import RunCheckpoints
    from dlx.setup import build

    run_dir = find_run_dir(path)
    cfg = load_config(run_dir, overrides)
    _import_from_launch_dir(run_dir)
    setup = build(cfg, strategy="single", runtime=False)
    ckpt = RunCheckpoints(run_dir / "checkpoints", create=False)
    try:
        if step is not None and step not in ckpt.steps(kind):
            raise UserError(
                f"no {kind} checkpoint at step {step} in {run_dir}",
                hint=f"saved {kind} steps: {ckpt.steps(kind) or 'none'}",
            )
        state, meta = ckpt.restore(setup.template_state(), kind, step)
    finally:
        ckpt.close()
    return LoadedRun(run_dir, setup.cfg, setup, state, meta, int(state.step))
