"""Sweep settings: `sweep=NAME` picks conf/sweep/NAME.yaml (your --config-dir's first), and
`sweep.KEY=VALUE` overrides one key of it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlx.errors import UserError, suggest

TYPES = ("grid", "random", "optuna")


@dataclass
class SweepSettings:
    type: str = "grid"
    trials: int | None = None  # grid: null = every point; random/optuna: how many trials
    metric: str = "val/accuracy"
    direction: str | None = None  # max | min; null: max for accuracy-like metrics, else min
    seed: int = 0
    storage: str | None = None  # null: <sweep dir>/study.journal
    prune: bool = False
    prune_startup: int = 5
    prune_warmup: int = 0
    startup: int = 10
    stale_after: float = 600.0

    def maximize(self) -> bool:
        return self.direction == "max"


def load_settings(
    given: dict[str, Any], continuous: bool, config_dir: Path | None = None
) -> SweepSettings:
    """Settings from the sweep=/sweep.KEY= overrides. Without sweep=, a search with a
    continuous interval() is optuna and anything else a grid."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    from dlx.config.compose import group_options
    from dlx.config.paths import conf_dirs

    name = str(given.get("sweep") or ("optuna" if continuous else "grid"))
    files = [d / "sweep" / f"{name}.yaml" for d in conf_dirs(config_dir)]
    found = next((f for f in files if f.is_file()), None)
    if found is None:
        options = group_options("sweep", config_dir)
        raise UserError(
            f"unknown sweep '{name}'.{suggest(name, options)}",
            hint=f"available: {', '.join(options)} (conf/sweep/*.yaml; yours in "
            "--config-dir DIR/sweep/)",
        )
    keys = {k.removeprefix("sweep."): v for k, v in given.items() if k != "sweep"}
    try:
        merged = OmegaConf.merge(
            OmegaConf.structured(SweepSettings), OmegaConf.load(found), OmegaConf.create(keys)
        )
    except OmegaConfBaseException as err:
        key = f"sweep.{getattr(err, 'full_key', '?')}"
        if isinstance(err, ConfigKeyError):
            known = [f"sweep.{k}" for k in SweepSettings.__dataclass_fields__]
            raise UserError(
                f"unknown sweep setting '{key}'.{suggest(key, known)}",
                hint=f"settings: {', '.join(known)}",
            ) from err
        raise UserError(f"wrong value for '{key}': {str(err).splitlines()[0]}") from err
    s: SweepSettings = OmegaConf.to_object(merged)  # type: ignore[assignment]
    _check(s)
    if s.direction is None:
        s.direction = "max" if "acc" in s.metric else "min"
    return s


def _check(s: SweepSettings) -> None:
    if s.type not in TYPES:
        raise UserError(f"'sweep.type' must be one of {', '.join(TYPES)}, got '{s.type}'")
    if s.direction not in (None, "max", "min"):
        raise UserError(
            f"'sweep.direction' must be max or min, got '{s.direction}'",
            hint="e.g. sweep.direction=max",
        )
    if s.trials is not None and s.trials <= 0:
        raise UserError(
            f"'sweep.trials' must be positive, got {s.trials}", hint="e.g. sweep.trials=20"
        )
    if s.type != "grid" and s.trials is None:
        raise UserError(f"sweep={s.type} needs sweep.trials=N")
    for key in ("prune_startup", "prune_warmup", "startup"):
        if getattr(s, key) < 0:
            raise UserError(f"'sweep.{key}' must be >= 0, got {getattr(s, key)}")
    if s.stale_after <= 0:
        raise UserError(
            f"'sweep.stale_after' must be positive, got {s.stale_after}",
            hint="e.g. sweep.stale_after=600 (seconds)",
        )
    if "/" not in s.metric:
        raise UserError(
            f"'sweep.metric' names a logged metric like val/accuracy, got '{s.metric}'",
            hint="metrics are the keys of a run's metrics.jsonl: val/accuracy, val/loss, ...",
        )
