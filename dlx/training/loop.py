"""The training loop: epochs of jitted steps, periodic logs, val evals, checkpoints, and the
ways a run ends early: preemption (SIGTERM/SIGINT), divergence, early stopping.

It runs one `Phase`: the whole of a standard run, or one task of a continual stream. What a
step computes is the task's business (dlx/tasks), how it spreads over devices the strategy's
(dlx/training/parallel.py); the loop only feeds batches and keeps time.

The host never waits for the device on the hot path: it blocks only on a step that is
`trainer.sync_every` steps old (bounding work in flight: with fake CPU devices, 64-100 steps
dispatched without a sync aborted XLA in an all-reduce rendezvous), and train logs are read
one step late, while the next step already runs.

Resuming is exact: the batch order is a pure function of (seed, epoch), dropout keys of
(rng, step), so restoring the state and skipping the epoch's first batches replays the run.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dlx.data import epoch_batches, eval_batches
from dlx.data.prefetch import prefetched
from dlx.errors import UserError
from dlx.track.console import epoch_line
from dlx.training.parallel import Strategy, to_host
from dlx.training.step import TrainState, weights

SHORT = {"accuracy": "acc"}  # names on the console line


@dataclass
class LoopState:
    """What a checkpoint must carry besides the TrainState to continue a run exactly."""

    step: int = 0
    best: dict[str, Any] = field(default_factory=dict)  # best_metric value, step, epoch
    # (params, model state) of the best eval: a host copy, kept on every process (test
    # eval is collective)
    best_weights: Any = None
    stale_evals: int = 0  # evals since the early-stopping metric last improved
    stop_best: float | None = None  # best value of the early-stopping metric
    best_unsaved: bool = False  # resumed with best = latest's weights: write `best` first

    def meta(self, epoch: int) -> dict:
        return {
            "step": self.step,
            "epoch": epoch,
            "best": self.best,
            "stale_evals": self.stale_evals,
            "stop_best": self.stop_best,
        }

    @classmethod
    def from_meta(cls, meta: dict, best_weights: Any) -> LoopState:
        return cls(
            step=int(meta["step"]),
            best=dict(meta.get("best") or {}),
            best_weights=best_weights,
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
    diverged_reason: str = ""  # what was not finite: "train loss is nan", "val/loss is inf"
    last_eval: dict[str, float] = field(default_factory=dict)
    train_time_s: float = 0.0
    samples_per_sec: float = 0.0
    timed_steps: int = 0

    @property
    def steps(self) -> int:
        return self.loop.step


def steps_per_epoch(examples: int, batch_size: int) -> int:
    return examples // batch_size


def total_steps(examples: int, batch_size: int, epochs: int, max_steps: int | None) -> int:
    """Steps of a run: whole epochs of full batches, capped by max_steps."""
    total = steps_per_epoch(examples, batch_size) * epochs
    return total if max_steps is None else min(total, max_steps)


@dataclass
class Phase:
    """One stretch of training: `total` steps over epochs of `examples` (row indices into
    whatever `make_batch` reads), starting at global step `first_step`."""

    examples: int
    batch_size: int
    total: int
    make_batch: Callable[[np.ndarray, int], dict]  # (rows, epoch) -> host batch dict
    evaluate: Callable[[TrainState, int], dict]  # (state, epoch) -> {"val/...": ...}
    lr_at: Callable[[int], float]  # step within the phase -> learning rate
    first_step: int = 0
    seed: int = 0  # batch order: a function of (seed, batch_order(epoch))
    eval_every: int = 1  # epochs; the phase's last epoch is always evaluated
    batch_order: Callable[[int], int] = lambda epoch: epoch  # epoch -> epoch_batches' id
    finish: Callable[[TrainState], TrainState] | None = None  # after the last step
    meta: Callable[[], dict] = dict  # added to each checkpoint's meta
    host_state: Callable[[], dict] | None = None  # host arrays saved with each checkpoint
    label: str = ""  # prefix of log lines ("task 2 ")
    keeps_best: bool = True  # evals pick a best checkpoint by trainer.best_metric
    # make_batch reads only this process's rows of each global batch (a disk-backed dataset
    # then reads its own shard); False: every process builds the whole batch (a continual
    # replay batch is drawn from a buffer all processes hold)
    reads_local: bool = False
    prefetch: int = 0  # batches built ahead in background threads (dlx/data/prefetch.py)
    read_threads: int = 1  # how many threads build them
    order_block: int = 0  # > 0: quasi-random batch order in blocks of rows (data on disk)
    order_window: int = 1  # blocks shuffled together (dlx/data/batching.py quasi_random)

    @property
    def per_epoch(self) -> int:
        return steps_per_epoch(self.examples, self.batch_size)

    @property
    def epochs(self) -> int:
        return math.ceil(self.total / self.per_epoch) if self.total else 0


@dataclass
class LoopIO:
    """Where the loop reports to: a RunSession provides these (dlx/session.py)."""

    console: Any
    metrics: Any
    checkpoints: Any = None
    should_stop: Callable[[], bool] = lambda: False
    profiler: Any = None
    # progress(force, **fields): live position for summary.json (the session throttles it)
    progress: Callable[..., None] = lambda force=False, **fields: None


def evaluate(
    task: Any,
    state: TrainState,
    arrays: dict[str, np.ndarray],
    batch_size: int,
    strategy: Strategy,
    shape_of: int = 0,
) -> dict:
    """The task's metrics over every example exactly once (the padded last batch is masked).
    `shape_of`: size batches as for a split of this many examples (when larger), so that val
    and test share one traced and compiled eval step (tracing a model again costs ~0.2 s)."""
    n = len(next(iter(arrays.values())))
    sums = None
    for idx, mask in eval_batches(n, strategy.eval_batch_size(batch_size, max(n, shape_of))):
        batch = {**{k: v[idx] for k, v in arrays.items()}, "mask": mask}
        out = strategy.eval_step(task, state, strategy.batch(batch))
        sums = out if sums is None else jax.tree_util.tree_map(jnp.add, sums, out)
    if sums is None:
        return {"loss": float("nan"), "count": 0}
    return task.summarize(to_host(sums))


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def watched_train_metrics(m: dict) -> dict:
    """The step metrics whose non-finite value means the run diverged: the loss and the
    gradient norms (Adam can keep a finite loss for a step after its gradients overflow)."""
    return {k: v for k, v in m.items() if k == "loss" or k.endswith("grad_norm")}


def non_finite(record: dict, keys: tuple[str, ...]) -> str:
    """'val/loss is nan' for the first watched value of `record` that is not finite, or ''."""
    for k in keys:
        v = record.get(k)
        if isinstance(v, float) and not math.isfinite(v):
            return f"{k} is {v}"
    return ""


def _improved(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return value > best if mode == "max" else value < best


class TrainLog:
    """Averages step metrics over a window and writes them one step late (see module doc);
    keeps the epoch's means of the shown metrics for its console line."""

    def __init__(self, batch: int, phase: Phase, shown: tuple, io: LoopIO) -> None:
        self.batch, self.phase, self.shown, self.io = batch, phase, shown, io
        self.window: list[dict] = []
        self.pending: tuple | None = None
        self.t_last = time.perf_counter()
        self.epoch_sums: dict[str, float] = {}
        self.epoch_steps = 0
        self._lr: Callable[[int], Any] | None = None

    def lr(self, step: int) -> float:
        """The learning rate at a step of the phase. The schedule is jitted: called eagerly,
        its jnp ops dispatch one by one (~0.1 s of a short run's start). Eager if it does
        not trace (a schedule written with Python control flow)."""
        if self._lr is None:
            self._lr = jax.jit(self.phase.lr_at)
            try:
                return float(self._lr(step))
            except Exception:  # not traceable: the eager call below raises if it is broken
                self._lr = self.phase.lr_at
        return float(self._lr(step))

    def epoch_means(self) -> dict[str, float]:
        """The shown metrics averaged over the steps flushed since the last call (the
        epoch's, once the epoch's last window is flushed); resets."""
        n, sums = self.epoch_steps, self.epoch_sums
        self.epoch_sums, self.epoch_steps = {}, 0
        return {SHORT.get(k, k): sums[k] / n for k in self.shown if k in sums and n}

    def add(self, m: dict) -> None:
        self.window.append(m)

    def close_window(self, step: int, epoch: int, done: int, steps: int) -> None:
        self.pending = (self.window, step, epoch, done, steps)
        self.window = []

    def flush(self) -> None:
        if self.pending is None:
            return
        window, step, epoch, done, steps = self.pending
        self.pending = None
        host = to_host(window)  # blocks on the window's last step only
        now = time.perf_counter()
        mean = {k: float(np.mean([w[k] for w in host])) for k in host[0]}
        sps = len(window) * self.batch / max(now - self.t_last, 1e-9)
        self.t_last = now
        for k in self.shown:
            if k in mean:
                self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + mean[k] * len(window)
        self.epoch_steps += len(window)
        lr = self.lr(step - self.phase.first_step - 1)
        self.io.metrics.write(
            {
                "step": step,
                "epoch": epoch,
                **{f"train/{k}": v for k, v in mean.items()},
                "train/lr": lr,
                "train/samples_per_sec": sps,
            }
        )
        shown = " ".join(f"{SHORT.get(k, k)} {mean[k]:.4f}" for k in self.shown if k in mean)
        self.io.console.log_line(
            f"{self.phase.label}epoch {epoch}/{self.phase.epochs} step {done}/{steps} "
            f"(global {step}) {shown} lr {lr:.2e} {sps:.0f} samples/s"
        )
        self.io.console.advance(done, {SHORT.get(k, k): mean[k] for k in self.shown if k in mean})


def train_loop(
    trainer: Any,
    phase: Phase,
    task: Any,
    state: TrainState,
    strategy: Strategy,
    io: LoopIO,
    start: LoopState | None = None,
) -> LoopResult:
    """Train `state` (already placed by `strategy`) through `phase`, from `start` (resume)
    or the phase's first step. `trainer` is the config's trainer section (best_metric and
    best_mode resolved)."""
    tr, batch, per_epoch = trainer, phase.batch_size, phase.per_epoch
    loop = start or LoopState(step=phase.first_step)
    done_before = loop.step - phase.first_step  # steps of this phase already trained
    res = LoopResult(state=state, loop=loop, epochs_completed=done_before // per_epoch)
    log = TrainLog(batch, phase, getattr(task, "shown", ("loss",)), io)
    stop_cfg = tr.early_stopping
    stop_metric = stop_cfg.metric or tr.best_metric
    stop_mode = stop_cfg.mode or tr.best_mode
    timed_steps, timed_s = 0, 0.0  # steady-state throughput: excludes compile and eval
    first_step = loop.step + 1
    end = phase.first_step + phase.total

    def diverge(reason: str) -> None:
        res.stop, res.diverged_step, res.diverged_reason = "diverged", loop.step, reason

    every_steps = tr.get("checkpoint_every_steps")
    every_s = (tr.get("checkpoint_every_minutes") or 0) * 60
    eval_steps = tr.get("eval_every_steps")
    last_save = [time.monotonic()]  # wall clock of the last checkpoint (by time: from start)

    def save(epoch: int, kinds: tuple[str, ...] = ("latest",), checked: bool = False) -> None:
        """Checkpoint the state, unless its params are not finite (`checked`: the caller
        just found them finite): a diverged model must never become `latest` (resume would
        continue it) or `best`. Orbax writes in the background: this returns once the
        arrays are off the device."""
        if io.checkpoints is None:
            return
        state = strategy.checkpoint_state(res.state)
        if not checked and not bool(_all_finite(state.params)):
            diverge(f"parameters are not finite at step {loop.step}")
            return
        host = phase.host_state() if phase.host_state is not None else None
        meta = {**loop.meta(epoch), **phase.meta()}
        io.checkpoints.save(state, meta, kinds, host=host)
        last_save[0] = time.monotonic()
        io.progress(True, steps=loop.step, epochs=res.epochs_completed, last_checkpoint=loop.step)

    def periodic(epoch: int, in_flight: deque) -> str | None:
        """Mid-epoch work after a step: an eval every `eval_every_steps`, else a checkpoint
        every `checkpoint_every_steps` or `checkpoint_every_minutes`. Returns "eval", "save"
        or None. Steps in flight are checked first: a save never follows an unchecked NaN."""
        due_eval = bool(eval_steps) and loop.step % eval_steps == 0
        due_save = (bool(every_steps) and loop.step % every_steps == 0) or (
            every_s > 0 and time.monotonic() - last_save[0] >= every_s
        )
        if not (due_eval or due_save) or diverged(in_flight, 0):
            return None
        if due_eval:
            run_eval(epoch)
            return "eval"
        save(epoch)
        return "save"

    def run_eval(epoch: int) -> None:
        rec = phase.evaluate(res.state, epoch)
        io.metrics.write({"step": loop.step, "epoch": epoch, **rec})
        res.last_eval = rec
        # A metric no eval produces: no best would ever be saved. (A task's own default may be
        # absent by design: a GAN without its judging classifier has no FID.)
        if phase.keeps_best and tr.best_metric not in rec and tr.best_metric != task.best_metric:
            raise UserError(
                f"trainer.best_metric={tr.best_metric} is not a metric this run produces",
                hint=f"use one of: {', '.join(k for k in rec if k.startswith('val/'))}",
            )
        bad = non_finite(rec, (*(k for k in rec if k.endswith("loss")), tr.best_metric))
        if not bad and not bool(_all_finite(strategy.unreplicate(res.state).params)):
            bad = "parameters are not finite"
        if bad:  # nothing of this eval is kept: not best, not latest
            diverge(f"{bad} after epoch {epoch}")
            return
        value = rec.get(tr.best_metric)
        improved = value is not None and _improved(
            value, loop.best.get(tr.best_metric), tr.best_mode
        )
        if improved:
            loop.best = {tr.best_metric: value, "step": loop.step, "epoch": epoch}
            loop.best_weights = to_host(weights(strategy.unreplicate(res.state)))
        watched = rec.get(stop_metric)
        if watched is not None and _improved(watched, loop.stop_best, stop_mode):
            loop.stop_best, loop.stale_evals = watched, 0
        else:
            loop.stale_evals += 1
        save(epoch, ("latest", "best") if improved else ("latest",), checked=True)

    def diverged(in_flight: deque, keep: int) -> bool:
        """Pop (and check) steps' losses and gradient norms until at most `keep` steps are
        in flight."""
        while len(in_flight) > keep:
            step_no, watched = in_flight.popleft()
            values = {k: float(v) for k, v in to_host(watched).items()}
            bad = non_finite(values, tuple(values))
            if bad:
                res.stop, res.diverged_step = "diverged", step_no
                res.diverged_reason = f"train {bad} at step {step_no}"
                return True
        return False

    def early_stop() -> bool:
        if stop_cfg.patience is not None and loop.stale_evals >= stop_cfg.patience:
            res.stop = "early_stopped"
        return res.stop == "early_stopped"

    def read_batch(rows: np.ndarray, epoch: int) -> dict:
        return phase.make_batch(strategy.local_rows(rows) if phase.reads_local else rows, epoch)

    feed = strategy.local_batch if phase.reads_local else strategy.batch

    if loop.best_unsaved:  # killed between the latest and best commits: finish that save
        save(res.epochs_completed, ("best",))
        loop.best_unsaved = False
    for epoch in range(res.epochs_completed + 1, phase.epochs + 1):
        steps_this_epoch = min(per_epoch, phase.total - (epoch - 1) * per_epoch)
        skip = done_before - (epoch - 1) * per_epoch  # > 0 only when resuming mid-epoch
        io.console.start_epoch(epoch, phase.epochs, steps_this_epoch)
        in_flight: deque = deque()
        t_epoch, epoch_steps = time.perf_counter(), 0
        order = epoch_batches(
            phase.examples,
            batch,
            seed=phase.seed,
            epoch=phase.batch_order(epoch),
            block=phase.order_block,
            window=phase.order_window,
        )
        rows = islice(order, max(skip, 0), steps_this_epoch)
        # `map` builds a batch only when `next` asks, after the stop check, so a preempted
        # run never calls make_batch for a step it does not train (a continual run's replay
        # draws change its buffer's random state). Prefetching (pure make_batch only)
        # builds them ahead.
        read = partial(read_batch, epoch=epoch)
        ready = (
            prefetched(read, rows, phase.prefetch, phase.read_threads)
            if phase.prefetch
            else map(read, rows)
        )
        for i in range(max(skip, 0), steps_this_epoch):
            if io.should_stop():
                res.stop = "preempted"
                break
            if io.profiler is not None:  # starts/stops a jax.profiler trace (trainer.profile)
                io.profiler.on_step(loop.step + 1, res.state)
            res.state, m = strategy.train_step(task, res.state, feed(next(ready)))
            loop.step, epoch_steps = loop.step + 1, epoch_steps + 1
            log.add(m)
            in_flight.append((loop.step, watched_train_metrics(m)))
            if loop.step == first_step:  # keep compilation out of the throughput figure
                jax.block_until_ready(m["loss"])
                t_epoch, epoch_steps = time.perf_counter(), 0
            if diverged(in_flight, tr.sync_every):
                break
            log.flush()  # the previous window, while this step runs
            io.progress(steps=loop.step, epochs=epoch - 1)
            if loop.step % tr.log_every == 0 or i + 1 == steps_this_epoch:
                log.close_window(loop.step, epoch, i + 1, steps_this_epoch)
            last = i + 1 == steps_this_epoch
            if last and (epoch % phase.eval_every == 0 or loop.step >= end):
                continue  # the epoch's own eval and checkpoint follow
            if periodic(epoch, in_flight) == "eval":
                best = loop.best.get("step") == loop.step
                val = epoch_line(phase.label, epoch, phase.epochs, {}, res.last_eval, best)
                io.console.info(f"{val} (step {loop.step})")
                if res.stop == "diverged" or early_stop():
                    break
        if phase.prefetch:
            ready.close()  # stops the prefetch thread when the epoch ends early
        if res.stop is None:
            diverged(in_flight, 0)
        if res.stop == "diverged":
            io.console.end_epoch()
            break  # the last good checkpoint stays the latest one
        if res.stop in ("preempted", "early_stopped") and log.window:
            done = loop.step - phase.first_step - (epoch - 1) * per_epoch
            log.close_window(loop.step, epoch, done, steps_this_epoch)
        log.flush()
        jax.block_until_ready(res.state.params)
        epoch_s = time.perf_counter() - t_epoch
        timed_steps += epoch_steps
        timed_s += epoch_s
        # The epoch's console line: its train means, then (below) its eval. None when only
        # the compiled first step ran (no steady-state time to divide by).
        sps = epoch_steps * batch / epoch_s if epoch_steps and epoch_s > 0 else None
        line = partial(epoch_line, phase.label, epoch, phase.epochs, log.epoch_means())
        if res.stop == "preempted":
            io.console.end_epoch(line() + " (preempted)", sps)
            save(epoch)
            break
        if res.stop == "early_stopped":  # by a mid-epoch eval (which saved)
            io.console.end_epoch(line(res.last_eval) + " (early stop)", sps)
            break
        res.epochs_completed = epoch
        if loop.step >= end and phase.finish is not None:
            res.state = phase.finish(res.state)
        evaluated = epoch % phase.eval_every == 0 or loop.step >= end
        if evaluated:
            run_eval(epoch)
        best = evaluated and loop.best.get("step") == loop.step and loop.best.get("epoch") == epoch
        io.console.end_epoch(line(res.last_eval if evaluated else None, best), sps)
        if res.stop == "diverged" or loop.step >= end:
            break
        if early_stop():
            break
    if io.profiler is not None:
        io.profiler.close(res.state)  # training ended inside trainer.profile_steps
    res.train_time_s, res.timed_steps = timed_s, timed_steps
    res.samples_per_sec = timed_steps * batch / timed_s if timed_s > 0 else float("nan")
    return res
