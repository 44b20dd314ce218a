"""optax optimizer + learning-rate schedule from the `optim` and `schedule` config sections."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import optax

from dlx.errors import UserError, suggest

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine")


def make_schedule(cfg: Mapping[str, Any], lr: float, total_steps: int) -> optax.Schedule:
    name = cfg["name"]
    final = lr * cfg.get("final_fraction", 0.0)
    if name == "constant":
        return optax.constant_schedule(lr)
    if name == "cosine":
        return optax.cosine_decay_schedule(lr, max(total_steps, 1), alpha=final / lr)
    if name == "warmup_cosine":
        warmup = round(cfg.get("warmup_fraction", 0.0) * total_steps)
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1), end_value=final
        )
    raise UserError(
        f"unknown schedule '{name}'.{suggest(name, SCHEDULES)}",
        hint=f"schedules: {', '.join(SCHEDULES)}",
    )


def _decay_mask(params: Any) -> Any:
    """Weight decay on kernels only: decaying biases (1-D leaves) only hurts."""
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def make_optimizer(
    optim: Mapping[str, Any], schedule: Mapping[str, Any], total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimizer, lr schedule); gradient clipping first when `optim.clip_norm` is set."""
    name, lr = optim["name"], float(optim["lr"])
    sched = make_schedule(schedule, lr, total_steps)
    wd = float(optim.get("weight_decay") or 0.0)
    if name == "adam":
        tx = optax.adam(sched, b1=optim["b1"], b2=optim["b2"], eps=optim["eps"])
        if wd:  # classic L2 (coupled), as torch.optim.Adam(weight_decay=...)
            tx = optax.chain(optax.add_decayed_weights(wd, mask=_decay_mask), tx)
    elif name == "adamw":
        tx = optax.adamw(
            sched,
            b1=optim["b1"],
            b2=optim["b2"],
            eps=optim["eps"],
            weight_decay=wd,
            mask=_decay_mask,
        )
    elif name == "sgd":
        tx = optax.sgd(
            sched, momentum=optim.get("momentum") or None, nesterov=bool(optim.get("nesterov"))
        )
        if wd:
            tx = optax.chain(optax.add_decayed_weights(wd, mask=_decay_mask), tx)
    else:
        raise UserError(
            f"unknown optimizer '{name}'.{suggest(name, OPTIMIZERS)}",
            hint=f"optimizers: {', '.join(OPTIMIZERS)}",
        )
    if optim.get("clip_norm"):
        tx = optax.chain(optax.clip_by_global_norm(float(optim["clip_norm"])), tx)
    return tx, sched
