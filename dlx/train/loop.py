"""The training loop: epochs of jitted steps, periodic logs, val eval, checkpoints, test."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dlx.data import Dataset, epoch_batches, eval_batches
from dlx.train.step import TrainState, jit_eval_step, jit_train_step


@dataclass
class LoopResult:
    state: TrainState
    steps: int
    epochs_completed: int
    best: dict[str, Any] = field(default_factory=dict)
    last_eval: dict[str, float] = field(default_factory=dict)
    train_time_s: float = 0.0
    samples_per_sec: float = 0.0


def evaluate(state: TrainState, x: np.ndarray, y: np.ndarray, batch_size: int) -> dict:
    """Loss and accuracy over every example exactly once (padded final batch is masked)."""
    sums = None
    for idx, mask in eval_batches(len(x), batch_size):
        out = jit_eval_step(state, x[idx], y[idx], mask)
        sums = out if sums is None else jax.tree_util.tree_map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    n = float(sums["count"])
    return {
        "loss": float(sums["loss_sum"]) / n,
        "accuracy": float(sums["correct"]) / n,
        "count": int(n),
    }


def _improved(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def train_loop(
    cfg: Any,
    data: Dataset,
    state: TrainState,
    schedule: Any,
    *,
    console: Any,
    metrics: Any,
    checkpoints: Any | None,
) -> LoopResult:
    tr, batch = cfg.trainer, int(cfg.data.batch_size)
    steps_per_epoch = len(data.x_train) // batch
    total = steps_per_epoch * tr.epochs
    if tr.max_steps is not None:
        total = min(total, tr.max_steps)
    epochs = math.ceil(total / steps_per_epoch)
    best_key = tr.best_metric
    res = LoopResult(state=state, steps=0, epochs_completed=0)
    timed_steps, timed_s = 0, 0.0  # steady-state throughput: excludes compile and eval
    step = 0

    def run_eval(epoch: int) -> None:
        out = evaluate(res.state, data.x_val, data.y_val, cfg.data.eval_batch_size)
        rec = {f"val/{k}": v for k, v in out.items()}
        metrics.write({"step": step, "epoch": epoch, **rec})
        console.metrics_table(f"val after epoch {epoch} (step {step})", rec)
        res.last_eval = rec
        value = rec.get(best_key)
        improved = value is not None and _improved(value, res.best.get(best_key), tr.best_mode)
        if improved:
            res.best = {best_key: value, "step": step, "epoch": epoch}
        if checkpoints is not None:
            meta = {"step": step, "epoch": epoch, "best": res.best}
            checkpoints.save(res.state, meta, ("latest", "best") if improved else ("latest",))

    for epoch in range(1, epochs + 1):
        steps_this_epoch = min(steps_per_epoch, total - step)
        console.start_epoch(epoch, epochs, steps_this_epoch)
        window: list[dict] = []
        pending = 0  # steps dispatched since the last sync
        t_sync = t_log = time.perf_counter()
        for i, idx in enumerate(
            epoch_batches(len(data.x_train), batch, seed=cfg.seed, epoch=epoch)
        ):
            if i >= steps_this_epoch:
                break
            res.state, m = jit_train_step(res.state, data.x_train[idx], data.y_train[idx])
            window.append(m)
            step, pending = step + 1, pending + 1
            last = i + 1 == steps_this_epoch
            # Block now and then: bounds the work queued on the device (see DESIGN.md). Step 1
            # syncs alone so its compile time stays out of the throughput figure.
            if step == 1 or step % tr.sync_every == 0 or step % tr.log_every == 0 or last:
                jax.block_until_ready(m["loss"])
                now = time.perf_counter()
                if step > 1:
                    timed_steps, timed_s = timed_steps + pending, timed_s + now - t_sync
                t_sync, pending = now, 0
                if step % tr.log_every == 0 or last:
                    _log_train(
                        window,
                        step,
                        epoch,
                        epochs,
                        i + 1,
                        steps_this_epoch,
                        batch,
                        now - t_log,
                        float(schedule(step - 1)),
                        console,
                        metrics,
                    )
                    window, t_log = [], now
                console.advance(i + 1, {"loss": float(m["loss"]), "acc": float(m["accuracy"])})
        console.end_epoch()
        res.steps, res.epochs_completed = step, epoch
        if epoch % tr.eval_every == 0 or step >= total:
            run_eval(epoch)
        if step >= total:
            break
    res.train_time_s = timed_s
    res.samples_per_sec = timed_steps * batch / timed_s if timed_s > 0 else float("nan")
    return res


def _log_train(
    window: list[dict],
    step: int,
    epoch: int,
    epochs: int,
    done: int,
    steps: int,
    batch: int,
    seconds: float,
    lr: float,
    console: Any,
    metrics: Any,
) -> None:
    host = jax.device_get(window)
    mean = {k: float(np.mean([w[k] for w in host])) for k in host[0]}
    sps = len(window) * batch / seconds if seconds > 0 else float("nan")
    metrics.write(
        {
            "step": step,
            "epoch": epoch,
            **{f"train/{k}": v for k, v in mean.items()},
            "train/lr": lr,
            "train/samples_per_sec": sps,
        }
    )
    console.log_line(
        f"epoch {epoch}/{epochs} step {done}/{steps} (global {step}) "
        f"loss {mean['loss']:.4f} acc {mean['accuracy']:.4f} "
        f"lr {lr:.2e} {sps:.0f} samples/s"
    )
