"""A continual run: a stream of tasks trained in order on one model, every task evaluated
after each one (row i of the accuracy matrix R). Same lifecycle, loop, strategies and
checkpoints as a standard run (dlx/training/fit.py): each task is one `Phase` of the loop.

    task 0 ... task T-1:  reset the optimizer, train (replay: mix buffer examples into each
    batch), [ewc: Fisher of the task into state.extra], evaluate every task -> R[i]

The strategies are variations, not loops of their own: EWC is the classify task's penalty
(dlx/tasks/supervised.py), LwF, SI and A-GEM are variations of its step
(dlx/continual/learners.py), replay is how batches are built (here; A-GEM's memory rows too),
the task-incremental head mask is an `allowed` array in the batch. So continual runs run
multi-device and resume after preemption exactly: each checkpoint carries the stream
position and R so far in its meta, the replay buffer (and its random state) beside the
TrainState, the EWC penalty and LwF's and SI's state inside it.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from dlx.continual.config import MEMORY, ContinualConfig, parse_config
from dlx.errors import UserError
from dlx.setup import Setup, check_batches
from dlx.training.loop import LoopState, Phase, evaluate, total_steps, train_loop


def _spend(steps: list[int], budget: int) -> list[int]:
    """trainer.max_steps as a budget for the whole stream: later tasks get what is left."""
    out = []
    for n in steps:
        out.append(min(n, budget))
        budget -= out[-1]
    return out


class StreamFit:
    name = "continual"

    def __init__(self, cfg: Any) -> None:
        self.ccfg: ContinualConfig = parse_config(cfg.continual)
        self.stream: Any = None
        self.steps: list[int] = []

    def plan(self, cfg: Any, data: Any) -> None:
        from dlx.continual.stream import build_stream

        if self.stream is None:
            batch = int(cfg.data.batch_size)
            self.stream = build_stream(self.ccfg, data, cfg.seed, batch)
            c = self.ccfg
            self.memories = None
            if c.strategy == "gdumb":
                self.memories = gdumb_memories(self.stream, c.replay_size, int(cfg.seed), batch)
            self.steps = [
                total_steps(self.examples(t), batch, c.epochs_per_task, c.max_steps_per_task)
                for t in range(len(self.stream.tasks))
            ]
            if cfg.trainer.max_steps is not None:
                self.steps = _spend(self.steps, int(cfg.trainer.max_steps))

    def examples(self, t: int) -> int:
        """How many examples task t trains on: its own, or GDumb's memory after it."""
        if self.memories is not None:
            return len(self.memories[t][1])
        return len(self.stream.tasks[t].train_idx)

    def schedule_steps(self, cfg: Any, data: Any) -> int:
        """One optimizer for every task (one compiled step); its state and schedule restart
        at each task, the schedule spanning the longest task."""
        self.plan(cfg, data)
        return max(self.steps)

    # ---- before anything is written ---------------------------------------------------------

    def initial(self, setup: Setup, resume_dir: Any) -> tuple[Any, LoopState | None, Any]:
        import jax

        cfg, c = setup.cfg, self.ccfg
        if cfg.init_from:
            raise UserError(
                "init_from= is not supported for continual runs", hint="drop init_from="
            )
        if jax.process_count() > 1:
            raise UserError(
                "continual runs use one process (several devices are fine)",
                hint="drop the dist.* settings",
            )
        self.plan(cfg, setup.data)
        batch = int(cfg.data.batch_size)
        memory = c.strategy in MEMORY
        what = "data.batch_size + continual.replay_per_batch" if memory else None
        full = batch + (c.replay_per_batch if memory else 0)
        check_batches(setup, full, what or "data.batch_size", whole_set=False)
        self.buffer = None
        if memory:
            from dlx.continual.replay import ReservoirBuffer

            x = self.stream.x_train
            self.buffer = ReservoirBuffer(c.replay_size, x.shape[1:], x.dtype, cfg.seed)
        self.R: list[list[float]] = []
        self.init_acc: list[float] | None = None
        self.timings: list[dict] = []
        self.final: list[dict] | None = None  # the last R row's evals (loss and count)
        state = setup.init_state()
        if resume_dir is None:
            return state, None, None
        from dlx.session import read_resume

        state, start, meta = read_resume(resume_dir, state, self._host_template())
        self.R, self.init_acc = meta.get("R", []), meta.get("init_accuracy")
        self.timings = meta.get("timings", [])
        if self.buffer is not None:
            self.buffer.load(meta["host"], meta["replay_rng"])
        return state, start, None

    def summary_fields(self) -> dict:
        c = self.ccfg
        return {
            "continual": {
                "stream": c.stream,
                "scenario": c.scenario,
                "strategy": c.strategy,
                "tasks": [t.name for t in self.stream.tasks],
            }
        }

    def _host_template(self) -> dict | None:
        return self.buffer.arrays() if self.buffer is not None else None

    # ---- the stream ---------------------------------------------------------------------------

    def run(
        self, setup: Setup, session: Any, state: Any, start: LoopState | None, host: Any
    ) -> None:
        cfg, c, tasks, strategy = setup.cfg, self.ccfg, self.stream.tasks, setup.strategy
        session.console.info(
            f"continual: {c.stream} {setup.data.name}, {len(tasks)} tasks "
            f"({', '.join(t.name for t in tasks)}), {c.scenario}-incremental, "
            f"strategy {c.strategy}; R[i][j] on {c.eval_split}"
        )
        state = strategy.place(state)
        if self.init_acc is None:
            self.init_acc = [e["accuracy"] for e in self.evaluate_all(setup, state)]
        first = len(self.R)  # tasks already done (and evaluated) before a resume
        step = start.step if start is not None else 0
        samples, train_s, result = 0, 0.0, None
        for t in range(first, len(tasks)):
            offset = sum(self.steps[:t])
            mid_task = start is not None and start.step > offset
            # To train.log only: the console shows one line per task (per epoch of it), the
            # loop's, labelled with the task (see `phase`).
            session.console.note(
                f"task {t + 1}/{len(tasks)} ({tasks[t].name}): {self.examples(t)} "
                f"examples{' in memory' if self.memories else ''}, {self.steps[t]} steps"
                + (" (resumed)" if mid_task else "")
            )
            if not mid_task and self.memories is not None:  # GDumb: a model from scratch
                state = fresh_model(setup, state)
            elif not mid_task:  # each task starts with a fresh optimizer state
                state = fresh_optimizer(state, strategy)
            phase = self.phase(setup, session, t, offset)
            t_start = time.perf_counter()
            if self.steps[t] == 0:  # the stream's step budget is spent: evaluate only
                phase.evaluate(state, 0)
                result = None
            else:
                result = train_loop(
                    cfg.trainer,
                    phase,
                    setup.task,
                    state,
                    strategy,
                    session.io,
                    start if mid_task else LoopState(step=offset),
                )
                state, step = result.state, result.steps
                samples += result.timed_steps * phase.batch_size
                train_s += result.train_time_s
                if result.stop is not None:
                    break
            self.timings[t].update(
                train_time_s=result.train_time_s if result is not None else 0.0,
                wall_time_s=time.perf_counter() - t_start,
            )
            start = None
        session.update(
            steps=step,
            train_time_s=train_s,
            samples_per_sec=samples / train_s if train_s > 0 else float("nan"),
        )
        stop = result.stop if result is not None else None
        if len(self.R) == len(tasks):
            self.report(setup, session, state)
        session.end(
            stop,
            step,
            diverged_step=getattr(result, "diverged_step", None),
            diverged_reason=getattr(result, "diverged_reason", ""),
        )

    def phase(self, setup: Setup, session: Any, t: int, offset: int) -> Phase:
        """Task t as one phase of the loop: its batches (with replay), the R row after its
        last step (with EWC consolidation before it), its position in each checkpoint."""
        cfg, c, task = setup.cfg, self.ccfg, setup.task
        return Phase(
            examples=self.examples(t),
            batch_size=int(cfg.data.batch_size),
            total=self.steps[t],
            make_batch=lambda rows, epoch: self.batch(setup, t, rows, epoch),
            evaluate=lambda state, epoch: self.evaluate_after(setup, session, state, t, offset),
            keeps_best=False,  # a stream is judged by its R matrix, not one best checkpoint
            lr_at=lambda step: setup.schedule(step),
            first_step=offset,
            seed=int(cfg.seed),
            eval_every=c.epochs_per_task,  # once, after the task's last step
            batch_order=lambda epoch: t * c.epochs_per_task + epoch,
            finish=(lambda s: self.consolidate(setup, s, t)) if consolidates(task) else None,
            meta=lambda: {
                "task": t,
                "R": self.R,
                "init_accuracy": self.init_acc,
                "timings": self.timings,
                **({"replay_rng": self.buffer.rng_state()} if self.buffer is not None else {}),
            },
            host_state=self._host_template,
            label=f"task {t + 1}/{len(self.stream.tasks)} ({self.stream.tasks[t].name}) ",
        )

    def batch(self, setup: Setup, t: int, rows: np.ndarray, epoch: int) -> dict:
        """Task t's examples at `rows` with their head mask; replay adds buffer examples
        (and offers the task's examples to the buffer, once: in the first epoch)."""
        stream = self.stream
        if self.memories is not None:  # GDumb: the memory's rows, each with its own task's
            x, y, row_tasks = memory_batch(stream, *self.memories[t], rows)
            batch = setup.task.host_batch({"x": x, "y": y})
            return {**batch, "allowed": stream.allowed[row_tasks]}
        x, y = stream.train_batch(t, rows)
        allowed = self._task_mask(t, len(y))
        if self.buffer is not None:
            rx, ry, rt = self.buffer.sample(self.ccfg.replay_per_batch)
            if epoch == 1:
                self.buffer.add(x, y, t)
            x, y = np.concatenate([x, rx]), np.concatenate([y, ry])
            allowed = np.concatenate([allowed, stream.allowed[rt]])
            replay = self._memory_rows(len(y) - len(ry), len(ry))
            return {**setup.task.host_batch({"x": x, "y": y}), "allowed": allowed, "replay": replay}
        return {**setup.task.host_batch({"x": x, "y": y}), "allowed": allowed}

    @functools.cache  # noqa: B019 (as _task_mask)
    def _memory_rows(self, current: int, memory: int) -> np.ndarray:
        """Which rows of a batch came from the buffer (A-GEM's reference gradient's rows)."""
        return np.arange(current + memory) >= current

    @functools.cache  # noqa: B019 (one fit per run: the cache lives as long as the run)
    def _task_mask(self, t: int, n: int) -> np.ndarray:
        """Task t's head mask for n rows, built once (not on every step)."""
        return np.repeat(self.stream.allowed[t : t + 1], n, axis=0)

    def evaluate_after(
        self, setup: Setup, session: Any, state: Any, t: int, offset: int
    ) -> dict[str, Any]:
        """Every task evaluated after training task t: row t of R, as a metrics record."""
        task, split = self.stream.tasks[t], self.ccfg.eval_split
        t_eval = time.perf_counter()
        evals = self.evaluate_all(setup, state)
        self.R.append([e["accuracy"] for e in evals])
        self.final = evals
        rec: dict[str, Any] = {"task": t}
        for j, e in enumerate(evals):
            rec[f"{split}/task{j}_accuracy"] = e["accuracy"]
            rec[f"{split}/task{j}_loss"] = e["loss"]
        rec[f"{split}/avg_accuracy_seen"] = float(np.mean(self.R[-1][: t + 1]))
        self.timings.append(
            {
                "name": task.name,
                "classes": list(task.classes),
                "train_examples": self.examples(t),
                "eval_examples": len(task.eval_idx),
                "steps": self.steps[t],
                "eval_time_s": time.perf_counter() - t_eval,
            }
        )
        if self.steps[t] == 0:  # no loop ran to log it
            session.metrics.write({"step": offset, **rec})
        return rec

    def consolidate(self, setup: Setup, state: Any, t: int) -> Any:
        """At task t's end: EWC's Fisher at its final params folded into the penalty, or the
        task's own `end_task` (LwF, SI); skipped after the last task: nothing follows that it
        could protect."""
        import jax

        from dlx.continual import ewc

        if t + 1 == len(self.stream.tasks):
            return state
        strategy, task = setup.strategy, self.stream.tasks[t]
        host = strategy.unreplicate(state)
        if hasattr(setup.task, "end_task"):  # lwf, si: the task's own consolidation
            outputs = np.isin(np.arange(self.stream.num_classes), task.classes)
            return strategy.place(jax.jit(setup.task.end_task)(host, outputs))
        rng = np.random.default_rng([int(setup.cfg.seed), t, 7])
        n = min(self.ccfg.fisher_samples, len(task.train_idx))
        x, _ = self.stream.train_batch(t, rng.choice(len(task.train_idx), n, replace=False))
        fisher = ewc.fisher_diagonal(
            host.apply_fn,
            host.params,
            x,
            self.stream.allowed[t],
            jax.random.fold_in(jax.random.PRNGKey(int(setup.cfg.seed) + 1), t),
            model_state=host.model_state,
        )
        penalty = ewc.consolidate(host.extra["ewc"], fisher, host.params)
        return strategy.place(host.replace(extra={**host.extra, "ewc": penalty}))

    def evaluate_all(self, setup: Setup, state: Any) -> list[dict]:
        """Accuracy and loss on every task's eval examples, each with its task's head mask."""
        out = []
        for j, task in enumerate(self.stream.tasks):
            x, y = self.stream.eval_batch(j, np.arange(len(task.eval_idx)))
            allowed = np.repeat(self.stream.allowed[j : j + 1], len(y), axis=0)
            arrays = {**setup.task.host_batch({"x": x, "y": y}), "allowed": allowed}
            out.append(
                evaluate(setup.task, state, arrays, setup.cfg.data.eval_batch_size, setup.strategy)
            )
        return out

    def report(self, setup: Setup, session: Any, state: Any) -> None:
        """continual.json, the R table and headline scores, the heatmap, the summary."""
        from dlx.continual.metrics import summarize
        from dlx.continual.report import headline, heatmap, matrix_rows
        from dlx.rundir import write_json

        c, names, con = self.ccfg, [t.name for t in self.stream.tasks], session.console
        scores = summarize(self.R, self.init_acc)
        if session.run_dir is not None:
            write_json(
                session.run_dir / "continual.json",
                {
                    "stream": c.stream,
                    "scenario": c.scenario,
                    "strategy": c.strategy,
                    "dataset": setup.data.name,
                    "eval_split": c.eval_split,
                    "settings": OmegaConf.to_container(setup.cfg.continual, resolve=True),
                    "task_names": names,
                    "R": self.R,
                    "R_definition": "R[i][j]: accuracy on task j after training tasks 0..i",
                    "init_accuracy": self.init_acc,
                    **scores,
                    "tasks": self.timings,
                },
            )
            try:
                title = (
                    f"{c.stream} {setup.data.name}, {c.scenario}-IL, {c.strategy}: ACC "
                    f"{scores['average_accuracy']:.3f}, BWT {scores['backward_transfer']:.3f}"
                )
                heatmap(self.R, names, session.run_dir / "plots" / "continual_heatmap.png", title)
            except Exception as err:  # a plot must never fail the run
                con.info(f"warning: heatmap not written: {type(err).__name__}: {err}")
        rows, headers = matrix_rows(self.R, names, self.init_acc)
        con.table(
            f"accuracy R[i][j] ({c.eval_split}): row i = after training task i", rows, headers
        )
        con.metrics_table(f"continual ({c.strategy}, {c.scenario}-IL)", dict(headline(scores)))
        session.metrics.write(
            {
                "step": session.summary.get("steps"),
                **{f"continual/{k}": v for k, v in headline(scores)},
            }
        )
        split, last = c.eval_split, self.final or self.evaluate_all(setup, state)
        session.update(
            average_accuracy=scores["average_accuracy"],
            backward_transfer=scores["backward_transfer"],
            forgetting=scores["forgetting"],
            forward_transfer=scores["forward_transfer"],
            **{
                split: {
                    f"{split}/accuracy": scores["average_accuracy"],
                    f"{split}/loss": float(np.mean([e["loss"] for e in last])),
                    f"{split}/count": int(sum(e["count"] for e in last)),
                }
            },
        )


def fresh_model(setup: Setup, state: Any) -> Any:
    """GDumb's restart: the model's initial params (and model state) and a new optimizer
    state, at `state`'s step (the schedule, checkpoints and dropout keys go on from it)."""
    host = setup.strategy.unreplicate(state)
    first = setup.init_state()
    return setup.strategy.place(first.replace(step=host.step, rng=host.rng, extra=host.extra))


def gdumb_memories(stream: Any, capacity: int, seed: int, batch_size: int) -> list[tuple]:
    """GDumb's memory after each task (dlx/continual/gdumb.py); it must fill a batch."""
    from dlx.continual.gdumb import class_balanced_memories

    rows = [task.train_idx for task in stream.tasks]
    memories = class_balanced_memories(rows, stream.y_train, capacity, seed)
    if len(memories[0][1]) < batch_size:
        raise UserError(
            f"GDumb's memory holds {len(memories[0][1])} examples after the first task, "
            f"fewer than data.batch_size={batch_size}",
            hint=f"raise continual.replay_size (the memory's size) to at least {batch_size}, "
            "or lower data.batch_size",
        )
    return memories


def memory_batch(
    stream: Any, task_ids: np.ndarray, memory_rows: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The memory entries at `rows`: images (each through its own task's permutation),
    labels and task ids."""
    from dlx.continual.stream import permute

    idx, tasks = memory_rows[rows], task_ids[rows]
    x = stream.x_train[idx]
    for t in np.unique(tasks):
        if stream.tasks[t].perm is not None:
            x[tasks == t] = permute(x[tasks == t], stream.tasks[t].perm)
    return x, stream.y_train[idx], tasks


def fresh_optimizer(state: Any, strategy: Any) -> Any:
    """`state` with a new optimizer state (initialised on one device, then placed)."""
    host = strategy.unreplicate(state)
    return strategy.place(host.replace(opt_state=host.tx.init(host.params)))


def consolidates(task: Any) -> bool:
    """Does the task change at each task's end (EWC's Fisher, LwF's teacher, SI's omega)?"""
    return getattr(task, "ewc_lambda", 0.0) > 0 or hasattr(task, "end_task")
