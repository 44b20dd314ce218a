"""The `continual` config section (conf/continual/default.yaml), typed and checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from dlx.errors import UserError, suggest

STREAMS = ("split", "permuted")
SCENARIOS = ("class", "task")
STRATEGIES = ("naive", "replay", "ewc", "lwf", "si", "agem", "gdumb")
MEMORY = ("replay", "agem")  # strategies with a replay buffer
EVAL_SPLITS = ("test", "val")


@dataclass
class ContinualConfig:
    stream: str = "split"
    scenario: str = "class"
    tasks: Any = 5  # split: a count or a list of class lists; permuted: a count
    strategy: str = "naive"
    epochs_per_task: int = 1
    max_steps_per_task: int | None = None
    replay_size: int = 1000
    replay_per_batch: int = 64
    ewc_lambda: float = 10000.0
    fisher_samples: int = 1000
    lwf_alpha: float = 1.0
    temperature: float = 2.0
    si_c: float = 1.0
    si_xi: float = 0.1
    eval_split: str = "test"


def parse_config(section: Any) -> ContinualConfig:
    """The checked settings of `cfg.continual`; a UserError names the first bad one."""
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    if not OmegaConf.is_config(section):
        section = OmegaConf.create(section if isinstance(section, dict) else {})
    try:
        typed = OmegaConf.merge(OmegaConf.structured(ContinualConfig), section)
    except OmegaConfBaseException as err:
        key = str(getattr(err, "key", None) or getattr(err, "full_key", "?"))
        if isinstance(err, ConfigKeyError):
            fields = ContinualConfig.__dataclass_fields__
            raise UserError(
                f"unknown config key 'continual.{key}'.{suggest(key, fields)}",
                hint=f"continual settings: {', '.join(fields)}",
            ) from err
        raise UserError(f"wrong value for 'continual.{key}': {str(err).splitlines()[0]}") from err
    out = ContinualConfig(**OmegaConf.to_container(typed, resolve=True))
    for key, allowed in (
        ("stream", STREAMS),
        ("scenario", SCENARIOS),
        ("strategy", STRATEGIES),
        ("eval_split", EVAL_SPLITS),
    ):
        value = getattr(out, key)
        if value not in allowed:
            raise UserError(
                f"continual.{key} must be one of {', '.join(allowed)}, got '{value}'."
                f"{suggest(str(value), allowed)}"
            )
    for key in ("epochs_per_task", "replay_size", "replay_per_batch", "fisher_samples"):
        if getattr(out, key) < 1:
            raise UserError(f"continual.{key} must be positive, got {getattr(out, key)}")
    if out.max_steps_per_task is not None and out.max_steps_per_task < 1:
        raise UserError(
            f"continual.max_steps_per_task must be positive or null, got {out.max_steps_per_task}"
        )
    for key in ("lwf_alpha", "si_c"):
        if getattr(out, key) < 0:
            raise UserError(f"continual.{key} must be >= 0, got {getattr(out, key)}")
    for key in ("temperature", "si_xi"):
        if getattr(out, key) <= 0:
            raise UserError(f"continual.{key} must be positive, got {getattr(out, key)}")
    if out.ewc_lambda < 0:
        raise UserError(
            f"continual.ewc_lambda must be >= 0, got {out.ewc_lambda}",
            hint="e.g. continual.ewc_lambda=100 (0 turns EWC off)",
        )
    return out
