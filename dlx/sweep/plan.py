"""What a `dlx sweep` command means: the fixed overrides, the space, the settings, the trials
(grid/random) and the sweep folder. Every trial's overrides are checked before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dlx.errors import UserError
from dlx.io import atomic_write
from dlx.sweep.settings import SweepSettings, load_settings
from dlx.sweep.space import Param, grid_points, parse_overrides, point_overrides, random_points


@dataclass
class SweepPlan:
    name: str
    sweep_dir: Path
    recipe: str
    fixed: list[str]  # overrides every trial gets (outputs.dir excluded)
    params: list[Param]
    settings: SweepSettings
    points: list[dict[str, Any]] | None  # grid/random: every trial, in order; optuna: None
    storage: str  # an RDB URL, or the path of a journal file
    config_dir: Path | None
    spec_hash: str

    @property
    def budget(self) -> int:
        """How many trials the sweep runs in all (over every worker and every rerun)."""
        if self.points is not None:
            return len(self.points)
        assert self.settings.trials is not None
        return self.settings.trials

    def overrides(self, values: dict[str, Any]) -> list[str]:
        """The `dlx train` overrides of one trial (without outputs.dir)."""
        return [*self.fixed, *point_overrides(self.params, values)]

    def trial_dir(self, number: int) -> Path:
        return self.sweep_dir / "trials" / f"{number:04d}"


def make_plan(
    overrides: Sequence[str], config_dir: Path | None = None, name: str | None = None
) -> SweepPlan:
    """Parse, validate (composing the trials' configs) and name the sweep. Writes nothing."""
    from dlx.config.compose import split_recipe

    parsed = parse_overrides(overrides)
    if not parsed.params:
        raise UserError(
            "nothing to sweep: no override has several values",
            hint="e.g. dlx sweep recipe=digits optim.lr=1e-3,3e-3 or "
            "'optim.lr=tag(log, interval(1e-4, 1e-2))' sweep=optuna",
        )
    continuous = any(not p.discrete for p in parsed.params)
    settings = load_settings(parsed.settings, continuous, config_dir)
    if settings.type == "grid":
        points: list[dict[str, Any]] | None = grid_points(parsed.params)
        points = points[: settings.trials] if settings.trials else points
    elif settings.type == "random":
        assert settings.trials is not None
        points = random_points(parsed.params, settings.trials, settings.seed)
    else:
        points = None
    root = _check_trials(parsed.fixed, parsed.params, parsed.outputs_dir, config_dir)
    swept_recipe = any(p.key == "recipe" for p in parsed.params)
    recipe = "multi" if swept_recipe else split_recipe(parsed.fixed)[0]
    identity = {
        "recipe": recipe,
        "fixed": sorted(parsed.fixed),
        "params": [[p.key, p.describe()] for p in parsed.params],
        **{k: getattr(settings, k) for k in ("type", "metric", "direction", "seed", "prune")},
    }
    # The folder (and Optuna study) name is a function of the search alone, not of trials,
    # jobs or storage: the same command on a rerun or on another machine joins the same sweep.
    spec_hash = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(f"--name '{name}' must be a plain folder name (letters, digits, ._-)")
    name = name or f"{recipe}-{settings.type}-{spec_hash}"
    sweep_dir = root / "sweeps" / name
    storage = settings.storage or str(sweep_dir / "study.journal")
    if "://" not in storage:  # a journal file: absolute, so trials and workers agree on it
        storage = str(Path(storage).expanduser().resolve())
    return SweepPlan(
        name=name,
        sweep_dir=sweep_dir,
        recipe=recipe,
        fixed=parsed.fixed,
        params=parsed.params,
        settings=settings,
        points=points,
        storage=storage,
        config_dir=config_dir,
        spec_hash=spec_hash,
    )


def _check_trials(
    fixed: list[str], params: list[Param], outputs_dir: str | None, config_dir: Path | None
) -> Path:
    """Compose a config for every value of every parameter (the others at their first value)
    so a typo or a wrong type fails now, with exit 2, not in trial 37. Returns the outputs
    root (outputs.dir as the composed config resolves it)."""
    from dlx.config import compose

    base = {p.key: p.check_values()[0] for p in params}
    extra = [f"outputs.dir={outputs_dir}"] if outputs_dir is not None else []
    cfg = compose([*fixed, *point_overrides(params, base), *extra], config_dir)
    for p in params:
        for value in p.check_values()[1:]:
            try:
                compose([*fixed, *point_overrides(params, {**base, p.key: value})], config_dir)
            except UserError as err:
                raise UserError(f"{p.override(value)}: {err}", hint=err.hint) from err
    return Path(cfg.outputs.dir).expanduser().resolve()


def spec_dict(plan: SweepPlan, command: Sequence[str]) -> dict[str, Any]:
    s = plan.settings
    return {
        "name": plan.name,
        "command": " ".join(command),
        "recipe": plan.recipe,
        "type": s.type,
        "metric": s.metric,
        "direction": s.direction,
        "trials": plan.budget,
        "seed": s.seed,
        "prune": s.prune,
        "storage": plan.storage,
        "study": plan.name,
        "fixed": plan.fixed,
        "params": {p.key: p.describe() for p in plan.params},
        "settings": {k: getattr(s, k) for k in SweepSettings.__dataclass_fields__},
        "hash": plan.spec_hash,
    }


def write_spec(plan: SweepPlan, command: Sequence[str]) -> None:
    """sweep.yaml. A folder holding another search (same --name, other overrides) is an
    error rather than a silently mixed study."""
    path = plan.sweep_dir / "sweep.yaml"
    if path.is_file():
        old = yaml.safe_load(path.read_text()) or {}
        if old.get("hash") != plan.spec_hash:
            raise UserError(
                f"{plan.sweep_dir} holds a different sweep ({old.get('command', '?')})",
                hint="use another --name, the same overrides as before, or delete the folder",
            )
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, yaml.safe_dump(spec_dict(plan, command), sort_keys=False))
