"""One training run: config -> data, model, optimizer -> run dir -> loop -> test -> summary.

Also the two ways to start from an earlier run: `resume=<run dir>` continues that run in its
own directory from its latest checkpoint; `init_from=<run dir>` starts a new run from its
best params with a fresh optimizer.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlx.errors import UserError
from dlx.rundir import create_run_dir, run_meta, write_json

# Exit codes of `dlx train` besides 0 (finished) and 2 (user error).
EXIT_DIVERGED = 3
EXIT_SIGNAL_BASE = 128  # preempted by signal N: 128 + N, as a shell reports it


def enable_compile_cache() -> None:
    """JAX's persistent compilation cache: a relaunch of the same recipe skips XLA compiles."""
    import jax

    cache = Path(os.environ.get("DLX_CACHE", Path.home() / ".cache" / "dlx")) / "jax"
    jax.config.update("jax_compilation_cache_dir", str(cache))
    # Every compile, however short: the many sub-second ones (init, placement, eval, the
    # optimizer's) add up to half a cold start (benchmarks/compile_cache.py: warm/cold 0.55
    # at a 0.5 s threshold, 0.46 at 0). Entries are small (~70 for a recipe, a few MB); no
    # size limit: JAX's LRU eviction cannot read a cache written without it (every write
    # then fails), and deleting the folder is always safe.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def param_rows(params: Any) -> list[tuple[str, str, int]]:
    """(layer path, shape, count) per parameter array, for the table shown at start."""
    import jax

    rows = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        rows.append((name, "x".join(map(str, leaf.shape)), int(leaf.size)))
    return rows


class _NullMetrics:
    """Stands in for MetricsWriter on processes other than 0 (only process 0 writes)."""

    def write(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


def resume_config(run_dir: str | Path, overrides: Sequence[str]) -> tuple[DictConfig, Path]:
    """The saved config of the run to resume (overrides on top, e.g. trainer.epochs=10)."""
    from dlx.restore import find_run_dir, load_config

    path = find_run_dir(run_dir)
    return load_config(path, overrides), path


def _keep_metrics_up_to(path: Path, step: int) -> None:
    """Drop records logged after the checkpoint we resume from: they will be redone."""
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= step
    ]
    path.write_text("".join(f"{line}\n" for line in kept))


def _init_from(path: str, params: Any) -> Any:
    """Best params of another run, checked name by name against this model's."""
    import jax

    from dlx.restore import load_run

    other = load_run(path, kind="best")
    flat = {
        jax.tree_util.keystr(p): v
        for p, v in jax.tree_util.tree_flatten_with_path(other.state.params)[0]
    }
    ours = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    for name in sorted(set(flat) | set(ours)):
        a, b = flat.get(name), ours.get(name)
        if a is None or b is None or a.shape != b.shape:
            raise UserError(
                f"init_from={path}: parameter {name} has shape "
                f"{None if a is None else tuple(a.shape)} there and "
                f"{None if b is None else tuple(b.shape)} in this model",
                hint="fine-tune a model with the same architecture (model.* settings)",
            )
    return other.state.params


def train(
    cfg: DictConfig, overrides: Sequence[str] = (), resume_dir: Path | None = None
) -> tuple[Path | None, dict]:
    """Run (or resume) training; returns the run directory (None on processes other than 0)
    and the summary."""
    if cfg.get("continual"):  # a stream of tasks: its own loop (dlx/continual)
        from dlx.continual import run_continual

        return run_continual(cfg, overrides, resume_dir=resume_dir)
    from dlx.data import load_dataset
    from dlx.models import build_model
    from dlx.runtime import configure_runtime

    # Data (numpy) and the model (a Flax module object) come first: they size the CPU
    # platform, which must be set before any JAX computation starts the backend.
    data = load_dataset(OmegaConf.to_container(cfg.data, resolve=True), seed=cfg.seed)
    model = build_model(OmegaConf.to_container(cfg.model, resolve=True), data.num_classes)
    configure_runtime(cfg.parallel, cfg.dist, cfg.data.batch_size, model, data.x_train[:1])
    import jax
    import jax.numpy as jnp

    from dlx.checkpoint import RunCheckpoints
    from dlx.track.console import RunConsole, attach_log_file, log
    from dlx.track.loggers import check_loggers, make_logger
    from dlx.track.plots import plot_run
    from dlx.track.profile import check_profile, make_profiler
    from dlx.train.loop import LoopState, evaluate, train_loop
    from dlx.train.optim import make_optimizer
    from dlx.train.parallel import make_strategy, to_host
    from dlx.train.signals import StopRequest
    from dlx.train.step import TrainState

    t0 = time.time()
    enable_compile_cache()
    main = jax.process_index() == 0
    console = RunConsole(cfg.trainer.progress if main else "none")
    # Everything that can fail on bad input happens before anything is written.
    strategy = make_strategy(cfg.parallel.name, cfg.parallel.devices)
    strategy.check_batch(cfg.data.batch_size)
    _check_batch(cfg, data)
    check_loggers(list(cfg.logger))
    check_profile(cfg.trainer)
    steps_per_epoch = len(data.x_train) // cfg.data.batch_size
    total = steps_per_epoch * cfg.trainer.epochs
    if cfg.trainer.max_steps is not None:
        total = min(total, cfg.trainer.max_steps)
    tx, schedule = make_optimizer(cfg.optim, cfg.schedule, total)
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(cfg.seed))
    sample = jnp.zeros((1, *data.input_shape), data.x_train.dtype)
    params = jax.jit(model.init)(init_rng, sample)["params"]
    if cfg.init_from and resume_dir is None:
        params = _init_from(cfg.init_from, params)
    state = TrainState.create(model.apply, params, tx, dropout_rng)
    rows = param_rows(state.params)
    n_params = sum(r[2] for r in rows)

    start = None
    if resume_dir is not None:
        ckpt = RunCheckpoints(resume_dir / "checkpoints", create=False)
        state, meta = ckpt.restore(state, "latest")
        best_params = None
        if ckpt.steps("best"):
            best_params = to_host(ckpt.restore(state, "best")[0].params)
        ckpt.close()
        start = LoopState.from_meta(meta, best_params)
    state = strategy.place(state)

    run_dir = handler = None
    metrics: Any = _NullMetrics()
    checkpoints = None
    if main:
        if resume_dir is None:
            run_dir = create_run_dir(Path(cfg.outputs.dir), cfg.recipe)
            OmegaConf.save(cfg, run_dir / "config.yaml")
            overrides_yaml = OmegaConf.to_yaml(OmegaConf.create(list(overrides)))
            (run_dir / "overrides.yaml").write_text(overrides_yaml)
            meta = run_meta(jax.devices(), ["dlx", "train", *overrides])
        else:
            run_dir = resume_dir
            _keep_metrics_up_to(run_dir / "metrics.jsonl", start.step)
            meta = json.loads((run_dir / "meta.json").read_text())
            meta.setdefault("resumes", []).append(
                {
                    "from_step": start.step,
                    "command": ["dlx", "train", *overrides],
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }
            )
        write_json(run_dir / "meta.json", meta)
        handler = attach_log_file(run_dir / "train.log")
        metrics = make_logger(
            list(cfg.logger), run_dir, cfg, resume_step=start.step if start is not None else None
        )
        if cfg.trainer.checkpoint:
            checkpoints = RunCheckpoints(run_dir / "checkpoints")
    profiler = make_profiler(cfg.trainer, run_dir)  # a no-op unless trainer.profile=true
    summary: dict[str, Any] = {
        "status": "running",
        "recipe": cfg.recipe,
        "run_dir": str(run_dir),
        "param_count": n_params,
        "parallel": strategy.describe(),
        "processes": jax.process_count(),
        "pid": os.getpid(),
        "host": platform.node(),
    }
    _write_summary(run_dir, summary)
    try:
        console.info(f"run dir: {run_dir}")
        if start is not None:
            console.info(f"resuming from step {start.step} (latest checkpoint)")
        if cfg.init_from and resume_dir is None:
            console.info(f"initialised from the best params of {cfg.init_from}")
        console.info(
            f"data: {data.name} from {data.source}: train {len(data.x_train)}, "
            f"val {len(data.x_val)}, test {len(data.x_test)}"
        )
        console.info(f"parallel: {strategy.describe()}")
        console.table(
            f"model {cfg.model.name}: {n_params:,} parameters",
            [*rows, ("total", "", n_params)],
            ("parameter", "shape", "count"),
        )
        with StopRequest() as stop:
            result = train_loop(
                cfg,
                data,
                state,
                schedule,
                strategy=strategy,
                console=console,
                metrics=metrics,
                checkpoints=checkpoints,
                start=start,
                should_stop=stop,
                profiler=profiler,
            )
        summary.update(
            steps=result.steps,
            epochs=result.epochs_completed,
            best=result.loop.best,
            val=result.last_eval,
            samples_per_sec=result.samples_per_sec,
            train_time_s=result.train_time_s,
        )
        if result.stop == "preempted":
            summary.update(
                status="preempted",
                signal=stop.signum,
                exit_code=EXIT_SIGNAL_BASE + (stop.signum or 0),
            )
            console.info(
                f"preempted at step {result.steps}: checkpoint saved. Resume with: "
                f"dlx train resume={run_dir}"
            )
        elif result.stop == "diverged":
            summary.update(
                status="diverged", diverged_step=result.diverged_step, exit_code=EXIT_DIVERGED
            )
            console.info(
                f"diverged: non-finite loss at step {result.diverged_step}; the last "
                f"good checkpoint is kept in {run_dir}/checkpoints"
            )
        else:
            _test(cfg, data, result, strategy, metrics, console, summary, evaluate)
            summary.update(status="finished", early_stopped=result.stop == "early_stopped")
        summary["wall_time_s"] = time.time() - t0
        console.info(f"{summary['status']} in {summary['wall_time_s']:.1f}s: {run_dir}")
    except BaseException as err:
        summary.update(
            status="failed", error=f"{type(err).__name__}: {err}", wall_time_s=time.time() - t0
        )
        raise
    finally:
        _write_summary(run_dir, summary)
        if checkpoints is not None:
            checkpoints.wait()
            checkpoints.close()
        profiler.close()
        if run_dir is not None:
            plot_run(run_dir)  # plots/*.png; a warning, never an error, if it fails
        metrics.close()
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
    return run_dir, summary


def _test(
    cfg: Any,
    data: Any,
    result: Any,
    strategy: Any,
    metrics: Any,
    console: Any,
    summary: dict,
    evaluate: Any,
) -> None:
    """Test metrics on the best params by the val metric (the final ones if no eval ran)."""
    state, tested = result.state, "final"
    if result.loop.best_params is not None:
        best = strategy.unreplicate(result.state).replace(params=result.loop.best_params)
        state, tested = strategy.place(best), f"best (step {result.loop.best.get('step')})"
    test = evaluate(
        state, data.x_test, data.y_test, cfg.data.eval_batch_size, strategy, lm=data.task == "lm"
    )
    test = {f"test/{k}": v for k, v in test.items()}
    metrics.write(
        {"step": result.steps, "epoch": result.epochs_completed, "checkpoint": tested, **test}
    )
    console.metrics_table(f"test, {tested} checkpoint", test)
    summary.update(test=test, tested_checkpoint=tested)


def _write_summary(run_dir: Path | None, summary: dict) -> None:
    if run_dir is not None:
        write_json(run_dir / "summary.json", summary)


def _check_batch(cfg: DictConfig, data: Any) -> None:
    if cfg.data.batch_size > len(data.x_train):
        raise UserError(
            f"data.batch_size={cfg.data.batch_size} is larger than the training set "
            f"({len(data.x_train)} examples)",
            hint=f"use data.batch_size={min(len(data.x_train), 128)} or fewer",
        )
