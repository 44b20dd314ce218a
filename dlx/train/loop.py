"""The training loop: epochs of jitted steps, periodic logs, val eval, checkpoints,
and the ways a run ends early: preemption (SIGTERM/SIGINT), divergence, early stopping.

The host never waits for the device on the hot path: it blocks only on a step that is
`trainer.sync_every` steps old (bounding work in flight, see DESIGN.md, without draining the
queue), and train logs are read one step late, while the next step already runs.

Resuming is exact: the batch order is a pure function of (seed, epoch), dropout keys of
(rng, step), so restoring the state and skipping the epoch's first batches replays the run.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dlx.data import Dataset, epoch_batches, eval_batches
from dlx.train.parallel import Strategy, to_host
from dlx.train.step import TrainState


@dataclass
class LoopState:
    """What a checkpoint must carry besides the TrainState to continue a run exactly."""

    step: int = 0
    best: dict[str, Any] = field(default_factory=dict)  # best_metric value, step, epoch
    best_params: Any = None  # host copy, kept on every process (test eval is collective)
    stale_evals: int = 0  # evals since the early-stopping metric last improved
    stop_best: float | None = None  # best value of the early-stopping metric

    def meta(self, epoch: int) -> dict:
        return {
            "step": self.step,
            "epoch": epoch,
            "best": self.best,
            "stale_evals": self.stale_evals,
            "stop_best": self.stop_best,
        }

    @classmethod
    def from_meta(cls, meta: dict, best_params: Any) -> LoopState:
        return cls(
            step=int(meta["step"]),
            best=dict(meta.get("best") or {}),
            best_params=best_params,
            stale_evals=int(meta.get("stale_evals", 0)),
            stop_best=meta.get("stop_best"),
        )


@dataclass
class LoopResult:
    state: TrainState
    loop: LoopState
    epochs_completed: int
    stop: str | None = None  # None (ran to the end), preempted, diverged, early_stopped
    diverged_step: int | None = None
    last_eval: dict[str, float] = field(default_factory=dict)
    train_time_s: float = 0.0
    samples_per_sec: float = 0.0

    @property
    def steps(self) -> int:
        return self.loop.step


def evaluate(
    state: TrainState,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    strategy: Strategy,
    lm: bool = False,
) -> dict:
    """Loss and accuracy over every example exactly once (padded final batch is masked)."""
    sums = None
    put = strategy.batch
    for idx, mask in eval_batches(len(x), strategy.eval_batch_size(batch_size, len(x))):
        out = strategy.eval_step(state, put(x[idx]), put(y[idx]), put(mask))
        sums = out if sums is None else jax.tree_util.tree_map(jnp.add, sums, out)
    if sums is None:
        return {"loss": float("nan"), "accuracy": float("nan"), "count": 0}
    sums = to_host(sums)
    n = max(float(sums["labels"]), 1.0)
    out = {
        "loss": float(sums["loss_sum"]) / n,
        "accuracy": float(sums["correct"]) / n,
        "count": int(sums["count"]),
    }
    if lm:  # loss is mean nats per predicted token (a character for char-level LMs)
        out["bits_per_char"] = out["loss"] / math.log(2)
        out["perplexity"] = math.exp(min(out["loss"], 700.0))
    return out


def _improved(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return value > best if mode == "max" else value < best


class TrainLog:
    """Averages step metrics over a window and writes them one step late (see module doc)."""

    def __init__(self, batch: int, schedule: Any, console: Any, metrics: Any) -> None:
        self.batch, self.schedule, self.console, self.metrics = batch, schedule, console, metrics
        self.window: list[dict] = []
        self.pending: tuple | None = None
        self.t_last = time.perf_counter()

    def add(self, m: dict) -> None:
        self.window.append(m)

    def close_window(self, step: int, epoch: int, epochs: int, done: int, steps: int) -> None:
        self.pending = (self.window, step, epoch, epochs, done, steps)
        self.window = []

    def flush(self) -> None:
        if self.pending is None:
            return
        window, step, epoch, epochs, done, steps = self.pending
        self.pending = None
        host = to_host(window)  # blocks on the window's last step only
        now = time.perf_counter()
        mean = {k: float(np.mean([w[k] for w in host])) for k in host[0]}
        sps = len(window) * self.batch / max(now - self.t_last, 1e-9)
        self.t_last = now
        lr = float(self.schedule(step - 1))
        self.metrics.write(
            {
                "step": step,
                "epoch": epoch,
                **{f"train/{k}": v for k, v in mean.items()},
                "train/lr": lr,
                "train/samples_per_sec": sps,
            }
        )
        self.console.log_line(
            f"epoch {epoch}/{epochs} step {done}/{steps} (global {step}) loss {mean['loss']:.4f} "
            f"acc {mean['accuracy']:.4f} lr {lr:.2e} {sps:.0f} samples/s"
        )
        self.console.advance(done, {"loss": mean["loss"], "acc": mean["accuracy"]})


def train_loop(
    cfg: Any,
    data: Dataset,
    state: TrainState,
    schedule: Any,
    *,
    strategy: Strategy,
    console: Any,
    metrics: Any,
    checkpoints: Any | None,
    start: LoopState | None = None,
    should_stop: Any = lambda: False,
    profiler: Any = None,
) -> LoopResult:
    """Train `state` (already placed by `strategy`) from `start` (resume) or step 0."""
    tr, batch = cfg.trainer, int(cfg.data.batch_size)
    steps_per_epoch = len(data.x_train) // batch
    total = steps_per_epoch * tr.epochs
    if tr.max_steps is not None:
        total = min(total, tr.max_steps)
    epochs = math.ceil(total / steps_per_epoch)
    loop = start or LoopState()
    res = LoopResult(state=state, loop=loop, epochs_completed=loop.step // steps_per_epoch)
    log = TrainLog(batch, schedule, console, metrics)
    stop_cfg = tr.early_stopping
    stop_metric = stop_cfg.metric or tr.best_metric
    stop_mode = stop_cfg.mode or tr.best_mode
    timed_steps, timed_s = 0, 0.0  # steady-state throughput: excludes compile and eval
    first_step = loop.step + 1
    put = strategy.batch

    def save(epoch: int, kinds: tuple[str, ...] = ("latest",)) -> None:
        if checkpoints is not None:
            checkpoints.save(strategy.unreplicate(res.state), loop.meta(epoch), kinds)

    def run_eval(epoch: int) -> None:
        out = evaluate(
            res.state,
            data.x_val,
            data.y_val,
            cfg.data.eval_batch_size,
            strategy,
            lm=data.task == "lm",
        )
        rec = {f"val/{k}": v for k, v in out.items()}
        metrics.write({"step": loop.step, "epoch": epoch, **rec})
        console.metrics_table(f"val after epoch {epoch} (step {loop.step})", rec)
        res.last_eval = rec
        value = rec.get(tr.best_metric)
        improved = value is not None and _improved(
            value, loop.best.get(tr.best_metric), tr.best_mode
        )
        if improved:
            loop.best = {tr.best_metric: value, "step": loop.step, "epoch": epoch}
            loop.best_params = to_host(strategy.unreplicate(res.state).params)
        watched = rec.get(stop_metric)
        if watched is not None and _improved(watched, loop.stop_best, stop_mode):
            loop.stop_best, loop.stale_evals = watched, 0
        else:
            loop.stale_evals += 1
        save(epoch, ("latest", "best") if improved else ("latest",))

    def diverged(in_flight: deque, keep: int) -> bool:
        """Pop (and check) losses until at most `keep` steps are in flight."""
        while len(in_flight) > keep:
            step_no, loss = in_flight.popleft()
            if not np.isfinite(float(to_host(loss))):
                res.stop, res.diverged_step = "diverged", step_no
                return True
        return False

    for epoch in range(res.epochs_completed + 1, epochs + 1):
        steps_this_epoch = min(steps_per_epoch, total - (epoch - 1) * steps_per_epoch)
        skip = loop.step - (epoch - 1) * steps_per_epoch  # > 0 only when resuming mid-epoch
        console.start_epoch(epoch, epochs, steps_this_epoch)
        in_flight: deque = deque()
        t_epoch, epoch_steps = time.perf_counter(), 0
        batches = epoch_batches(len(data.x_train), batch, seed=cfg.seed, epoch=epoch)
        for i, idx in zip(range(steps_this_epoch), batches, strict=False):
            if i < skip:
                continue
            if should_stop():
                res.stop = "preempted"
                break
            if profiler is not None:  # starts/stops a jax.profiler trace (trainer.profile)
                profiler.on_step(loop.step + 1, res.state)
            res.state, m = strategy.train_step(
                res.state, put(data.x_train[idx]), put(data.y_train[idx])
            )
            loop.step, epoch_steps = loop.step + 1, epoch_steps + 1
            log.add(m)
            in_flight.append((loop.step, m["loss"]))
            if loop.step == first_step:  # keep compilation out of the throughput figure
                jax.block_until_ready(m["loss"])
                t_epoch, epoch_steps = time.perf_counter(), 0
            if diverged(in_flight, tr.sync_every):
                break
            log.flush()  # the previous window, while this step runs
            if loop.step % tr.log_every == 0 or i + 1 == steps_this_epoch:
                log.close_window(loop.step, epoch, epochs, i + 1, steps_this_epoch)
        if res.stop is None:
            diverged(in_flight, 0)
        if res.stop == "diverged":
            console.end_epoch()
            break  # the last good checkpoint stays the latest one
        if res.stop == "preempted" and log.window:
            log.close_window(
                loop.step,
                epoch,
                epochs,
                loop.step - (epoch - 1) * steps_per_epoch,
                steps_this_epoch,
            )
        log.flush()
        jax.block_until_ready(res.state.params)
        timed_steps += epoch_steps
        timed_s += time.perf_counter() - t_epoch
        console.end_epoch()
        if res.stop == "preempted":
            save(epoch)
            break
        res.epochs_completed = epoch
        if epoch % tr.eval_every == 0 or loop.step >= total:
            run_eval(epoch)
        if loop.step >= total:
            break
        if stop_cfg.patience is not None and loop.stale_evals >= stop_cfg.patience:
            res.stop = "early_stopped"
            break
    if profiler is not None:
        profiler.close(res.state)  # training ended inside trainer.profile_steps
    res.train_time_s = timed_s
    res.samples_per_sec = timed_steps * batch / timed_s if timed_s > 0 else float("nan")
    return res
