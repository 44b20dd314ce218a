"""One continual run: a stream of tasks trained in order on one model, every task evaluated
after each one. Same contract as dlx.run.train: returns (run dir, summary), and bad input is
a UserError raised before anything is written.

    task 0 ... task T-1:  reset the optimizer, train (replay: mix buffer examples into each
    batch), [ewc: Fisher of the task], evaluate every task -> row i of R
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dlx.continual.config import ContinualConfig, parse_config
from dlx.continual.metrics import summarize
from dlx.errors import UserError
from dlx.rundir import create_run_dir, run_meta, write_json


def _check(cfg: DictConfig, resume_dir: Path | None) -> ContinualConfig:
    if resume_dir is not None:
        raise UserError(
            "continual runs cannot be resumed", hint="start it again: it is a few minutes"
        )
    if cfg.init_from:
        raise UserError("init_from= is not supported for continual runs", hint="drop init_from=")
    if cfg.parallel.name not in ("auto", "single"):
        raise UserError(
            f"continual runs train on one device; parallel={cfg.parallel.name} is not supported",
            hint="use parallel=single",
        )
    return parse_config(cfg.continual)


def run_continual(
    cfg: DictConfig, overrides: Sequence[str] = (), resume_dir: Path | None = None
) -> tuple[Path | None, dict]:
    """Train the stream `cfg.continual` describes; writes continual.json and the heatmap."""
    ccfg = _check(cfg, resume_dir)
    from dlx.runtime import configure_runtime

    configure_runtime(cfg.parallel, cfg.dist)  # before any other JAX call
    import jax
    import jax.numpy as jnp

    from dlx.continual.stream import build_stream
    from dlx.data import load_dataset
    from dlx.models import build_model
    from dlx.run import enable_compile_cache, param_rows
    from dlx.track.console import RunConsole, attach_log_file, log
    from dlx.track.metrics import MetricsWriter
    from dlx.train.optim import make_optimizer
    from dlx.train.step import TrainState

    t0 = time.time()
    if jax.process_count() > 1:
        raise UserError("continual runs use one process", hint="drop the dist.* settings")
    enable_compile_cache()
    console = RunConsole(cfg.trainer.progress)
    batch = int(cfg.data.batch_size)
    data = load_dataset(OmegaConf.to_container(cfg.data, resolve=True), seed=cfg.seed)
    stream = build_stream(ccfg, data, cfg.seed, batch)
    model = build_model(OmegaConf.to_container(cfg.model, resolve=True), data.num_classes)
    steps = [
        _task_steps(len(task.train_idx), batch, ccfg.epochs_per_task, ccfg.max_steps_per_task)
        for task in stream.tasks
    ]
    if cfg.trainer.max_steps is not None:  # a budget for the whole stream (quick runs): the
        steps = _spend(steps, int(cfg.trainer.max_steps))  # tasks past it train 0 steps
    # One optimizer for every task (one compiled step); its state and schedule restart at each
    # task, the schedule spanning the longest task.
    tx, schedule = make_optimizer(cfg.optim, cfg.schedule, max(steps))
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(cfg.seed))
    sample = jnp.zeros((1, *data.input_shape), data.x_train.dtype)
    params = jax.jit(model.init)(init_rng, sample)["params"]
    state = TrainState.create(model.apply, params, tx, dropout_rng)
    rows = param_rows(state.params)
    n_params = sum(r[2] for r in rows)

    run_dir = create_run_dir(Path(cfg.outputs.dir), cfg.recipe)
    OmegaConf.save(cfg, run_dir / "config.yaml")
    (run_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
    write_json(run_dir / "meta.json", run_meta(jax.devices(), ["dlx", "train", *overrides]))
    handler = attach_log_file(run_dir / "train.log")
    metrics = MetricsWriter(run_dir / "metrics.jsonl")
    checkpoints = None
    if cfg.trainer.checkpoint:
        from dlx.checkpoint import RunCheckpoints

        checkpoints = RunCheckpoints(run_dir / "checkpoints")
    summary: dict[str, Any] = {
        "status": "running",
        "recipe": cfg.recipe,
        "run_dir": str(run_dir),
        "param_count": n_params,
        "continual": {
            "stream": ccfg.stream,
            "scenario": ccfg.scenario,
            "strategy": ccfg.strategy,
            "tasks": [t.name for t in stream.tasks],
        },
        "pid": os.getpid(),
        "host": platform.node(),
    }
    write_json(run_dir / "summary.json", summary)
    try:
        console.info(f"run dir: {run_dir}")
        console.info(
            f"continual: {ccfg.stream} {data.name}, {len(stream.tasks)} tasks "
            f"({', '.join(t.name for t in stream.tasks)}), {ccfg.scenario}-incremental, "
            f"strategy {ccfg.strategy}; R[i][j] on {ccfg.eval_split}"
        )
        console.table(
            f"model {cfg.model.name}: {n_params:,} parameters",
            [*rows, ("total", "", n_params)],
            ("parameter", "shape", "count"),
        )
        trainer = _StreamTrainer(cfg, ccfg, stream, state, schedule, console, metrics)
        result = trainer.run(steps, checkpoints)
        names = [t.name for t in stream.tasks]
        scores = summarize(result["R"], result["init"])
        report = {
            "stream": ccfg.stream,
            "scenario": ccfg.scenario,
            "strategy": ccfg.strategy,
            "dataset": data.name,
            "eval_split": ccfg.eval_split,
            "settings": OmegaConf.to_container(cfg.continual, resolve=True),
            "task_names": names,
            "R": result["R"],
            "R_definition": "R[i][j]: accuracy on task j after training tasks 0..i",
            "init_accuracy": result["init"],
            **scores,
            "tasks": result["tasks"],
        }
        write_json(run_dir / "continual.json", report)
        _show(console, result, names, scores, ccfg)
        try:
            from dlx.continual.report import heatmap

            title = (
                f"{ccfg.stream} {data.name}, {ccfg.scenario}-IL, {ccfg.strategy}: ACC "
                f"{scores['average_accuracy']:.3f}, BWT {scores['backward_transfer']:.3f}"
            )
            heatmap(result["R"], names, run_dir / "plots" / "continual_heatmap.png", title)
        except Exception as err:  # a plot must never fail the run
            console.info(f"warning: heatmap not written: {type(err).__name__}: {err}")
        metrics.write(
            {"step": result["steps"], **{f"continual/{k}": v for k, v in _headline(scores)}}
        )
        summary.update(
            status="finished",
            steps=result["steps"],
            average_accuracy=scores["average_accuracy"],
            backward_transfer=scores["backward_transfer"],
            forgetting=scores["forgetting"],
            forward_transfer=scores["forward_transfer"],
            train_time_s=result["train_time_s"],
            samples_per_sec=result["samples_per_sec"],
        )
        # The final model on every task: accuracy = ACC, loss and count over the tasks.
        split, last = ccfg.eval_split, result["final"]
        summary[split] = {
            f"{split}/accuracy": scores["average_accuracy"],
            f"{split}/loss": float(np.mean([e["loss"] for e in last])),
            f"{split}/count": int(sum(e["count"] for e in last)),
        }
        summary["wall_time_s"] = time.time() - t0
        console.info(f"finished in {summary['wall_time_s']:.1f}s: {run_dir}")
    except BaseException as err:
        summary.update(
            status="failed", error=f"{type(err).__name__}: {err}", wall_time_s=time.time() - t0
        )
        raise
    finally:
        write_json(run_dir / "summary.json", summary)
        if checkpoints is not None:
            checkpoints.wait()
            checkpoints.close()
        metrics.close()
        log.removeHandler(handler)
        handler.close()
    return run_dir, summary


def _task_steps(n: int, batch: int, epochs: int, cap: int | None) -> int:
    total = (n // batch) * epochs
    return min(total, cap) if cap is not None else total


def _spend(steps: list[int], budget: int) -> list[int]:
    out = []
    for n in steps:
        out.append(min(n, budget))
        budget -= out[-1]
    return out


def _headline(scores: dict) -> list[tuple[str, float]]:
    from dlx.continual.report import headline

    return headline(scores)


def _show(console: Any, result: dict, names: list[str], scores: dict, ccfg: Any) -> None:
    from dlx.continual.report import matrix_rows

    rows, headers = matrix_rows(result["R"], names, result["init"])
    console.table(
        f"accuracy R[i][j] ({ccfg.eval_split}): row i = after training task i", rows, headers
    )
    console.metrics_table(
        f"continual ({ccfg.strategy}, {ccfg.scenario}-IL)", dict(_headline(scores))
    )


class _StreamTrainer:
    """The loop over tasks. Holds what lives across tasks: the state, the replay buffer and
    the folded EWC penalty."""

    def __init__(
        self,
        cfg: Any,
        ccfg: ContinualConfig,
        stream: Any,
        state: Any,
        schedule: Any,
        console: Any,
        metrics: Any,
    ) -> None:
        import jax
        import jax.numpy as jnp

        from dlx.continual import ewc
        from dlx.continual.replay import ReservoirBuffer

        self.cfg, self.ccfg, self.stream, self.state = cfg, ccfg, stream, state
        self.schedule, self.console, self.metrics = schedule, console, metrics
        self.batch = int(cfg.data.batch_size)
        self.buffer = None
        if ccfg.strategy == "replay":
            x = stream.x_train
            self.buffer = ReservoirBuffer(ccfg.replay_size, x.shape[1:], x.dtype, cfg.seed)
        self.penalty = ewc.empty_penalty(state.params) if ccfg.strategy == "ewc" else None
        self.ewc_lambda = jnp.asarray(ccfg.ewc_lambda, jnp.float32)
        self.fisher_rng = jax.random.PRNGKey(cfg.seed + 1)

    def run(self, steps: list[int], checkpoints: Any) -> dict:
        tasks = self.stream.tasks
        init = [self.evaluate(j)["accuracy"] for j in range(len(tasks))]
        r: list[list[float]] = []
        timings, step, samples, train_s = [], 0, 0, 0.0
        for t, task in enumerate(tasks):
            self.console.info(
                f"task {t + 1}/{len(tasks)} ({task.name}): {len(task.train_idx)} examples, "
                f"{steps[t]} steps"
            )
            t_start = time.perf_counter()
            step, n_samples = self.train_task(t, steps[t], step)
            t_train = time.perf_counter() - t_start
            train_s, samples = train_s + t_train, samples + n_samples
            t_fisher = 0.0
            if self.penalty is not None and t + 1 < len(tasks):
                t_fisher = time.perf_counter()
                self.consolidate(t)
                t_fisher = time.perf_counter() - t_fisher
            t_eval = time.perf_counter()
            evals = [self.evaluate(j) for j in range(len(tasks))]
            t_eval = time.perf_counter() - t_eval
            r.append([e["accuracy"] for e in evals])
            split = self.ccfg.eval_split
            record: dict[str, Any] = {"step": step, "task": t}
            for j, e in enumerate(evals):
                record[f"{split}/task{j}_accuracy"] = e["accuracy"]
                record[f"{split}/task{j}_loss"] = e["loss"]
            seen = r[-1][: t + 1]
            record[f"{split}/avg_accuracy_seen"] = float(np.mean(seen))
            self.metrics.write(record)
            self.console.info(
                f"after task {t} ({task.name}): {split} accuracy on tasks 0..{t}: "
                + " ".join(f"{a:.4f}" for a in seen)
                + f" (mean {np.mean(seen):.4f}) [{t_train:.1f}s train, {t_eval:.1f}s eval]"
            )
            timings.append(
                {
                    "name": task.name,
                    "classes": list(task.classes),
                    "train_examples": len(task.train_idx),
                    "eval_examples": len(task.eval_idx),
                    "steps": steps[t],
                    "train_time_s": t_train,
                    "fisher_time_s": t_fisher,
                    "eval_time_s": t_eval,
                }
            )
            if checkpoints is not None:
                meta = {"step": step, "epoch": t + 1, "task": t, "best": {}}
                checkpoints.save(self.state, meta, ("latest",))
        return {
            "R": r,
            "init": init,
            "tasks": timings,
            "steps": step,
            "train_time_s": train_s,
            "samples_per_sec": samples / train_s if train_s > 0 else float("nan"),
            "final": evals,
        }

    def train_task(self, t: int, n_steps: int, step: int) -> tuple[int, int]:
        """Train task t for n_steps; returns the global step and the examples processed."""
        import jax

        from dlx.continual.step import jit_train_step
        from dlx.data import epoch_batches
        from dlx.train.parallel import to_host

        tr, ccfg, stream = self.cfg.trainer, self.ccfg, self.stream
        task = stream.tasks[t]
        self.state = self.state.replace(opt_state=self.state.tx.init(self.state.params))
        allowed_cur = np.repeat(stream.allowed[t : t + 1], self.batch, axis=0)
        window: list[dict] = []
        done, samples = 0, 0
        for epoch in range(ccfg.epochs_per_task):
            # Batch order: a function of (seed, task, epoch) only.
            e_id = t * ccfg.epochs_per_task + epoch + 1
            for rows in epoch_batches(
                len(task.train_idx), self.batch, seed=self.cfg.seed, epoch=e_id
            ):
                if done >= n_steps:
                    break
                x, y = stream.train_batch(t, rows)
                allowed = allowed_cur
                if self.buffer is not None:
                    rx, ry, rt = self.buffer.sample(ccfg.replay_per_batch)
                    if epoch == 0:  # the stream: each example offered once
                        self.buffer.add(x, y, t)
                    x, y = np.concatenate([x, rx]), np.concatenate([y, ry])
                    allowed = np.concatenate([allowed_cur, stream.allowed[rt]])
                self.state, m = jit_train_step(
                    self.state, x, y, allowed, self.penalty, self.ewc_lambda
                )
                done, step, samples = done + 1, step + 1, samples + len(y)
                window.append(m)
                if done % tr.sync_every == 0:  # bound the steps in flight
                    jax.block_until_ready(m["loss"])
                if done % tr.log_every == 0 or done == n_steps:
                    mean = {k: float(np.mean([w[k] for w in to_host(window)])) for k in window[0]}
                    window = []
                    self.metrics.write(
                        {
                            "step": step,
                            "task": t,
                            "epoch": epoch + 1,
                            **{f"train/{k}": v for k, v in mean.items()},
                            "train/lr": float(self.schedule(done - 1)),
                        }
                    )
                    extra = f" penalty {mean['penalty']:.4f}" if self.penalty is not None else ""
                    self.console.log_line(
                        f"task {t} step {done}/{n_steps} (global {step}) loss {mean['loss']:.4f} "
                        f"acc {mean['accuracy']:.4f}{extra}"
                    )
        jax.block_until_ready(self.state.params)
        return step, samples

    def consolidate(self, t: int) -> None:
        """EWC: the Fisher of task t at its final params, folded into the penalty."""
        import jax

        from dlx.continual import ewc

        task = self.stream.tasks[t]
        rng = np.random.default_rng([self.cfg.seed, t, 7])
        n = min(self.ccfg.fisher_samples, len(task.train_idx))
        rows = rng.choice(len(task.train_idx), n, replace=False)
        x, _ = self.stream.train_batch(t, rows)
        fisher = ewc.fisher_diagonal(
            self.state.apply_fn,
            self.state.params,
            x,
            self.stream.allowed[t],
            jax.random.fold_in(self.fisher_rng, t),
        )
        self.penalty = ewc.consolidate(self.penalty, fisher, self.state.params)

    def evaluate(self, t: int) -> dict:
        """Accuracy and loss on task t's eval examples, with task t's head mask."""
        from dlx.continual.step import jit_eval_step
        from dlx.data import eval_batches
        from dlx.train.parallel import to_host

        n = len(self.stream.tasks[t].eval_idx)
        allowed = self.stream.allowed[t]
        sums = None
        for rows, mask in eval_batches(n, int(self.cfg.data.eval_batch_size)):
            x, y = self.stream.eval_batch(t, rows)
            out = jit_eval_step(self.state, x, y, allowed, mask)
            sums = out if sums is None else {k: sums[k] + out[k] for k in out}
        sums = to_host(sums)
        count = max(float(sums["count"]), 1.0)
        return {
            "accuracy": float(sums["correct"]) / count,
            "loss": float(sums["loss_sum"]) / count,
            "count": int(sums["count"]),
        }
