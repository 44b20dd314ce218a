"""One training run: config -> data, model, optimizer -> run dir -> loop -> test -> summary."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlx.rundir import create_run_dir, run_meta, write_json


def enable_compile_cache() -> None:
    """JAX's persistent compilation cache: a relaunch of the same recipe skips XLA compiles."""
    import jax

    cache = Path(os.environ.get("DLX_CACHE", Path.home() / ".cache" / "dlx")) / "jax"
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


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


def train(cfg: DictConfig, overrides: Sequence[str] = ()) -> Path | None:
    """Run training as configured; returns the run directory (None on processes other than 0)."""
    from dlx.runtime import configure_runtime

    configure_runtime(cfg.parallel, cfg.dist)  # before any other JAX call
    import jax
    import jax.numpy as jnp

    from dlx.checkpoint import RunCheckpoints
    from dlx.data import load_dataset
    from dlx.models import build_model
    from dlx.track.console import RunConsole, attach_log_file, log
    from dlx.track.metrics import MetricsWriter
    from dlx.train.loop import evaluate, train_loop
    from dlx.train.optim import make_optimizer
    from dlx.train.parallel import make_strategy
    from dlx.train.step import TrainState

    t0 = time.time()
    enable_compile_cache()
    main = jax.process_index() == 0
    console = RunConsole(cfg.trainer.progress if main else "none")
    # Everything that can fail on bad input happens before the run dir exists.
    strategy = make_strategy(cfg.parallel.name, cfg.parallel.devices)
    strategy.check_batch(cfg.data.batch_size)
    data = load_dataset(OmegaConf.to_container(cfg.data, resolve=True), seed=cfg.seed)
    model = build_model(OmegaConf.to_container(cfg.model, resolve=True), data.num_classes)
    _check_batch(cfg, data)
    steps_per_epoch = len(data.x_train) // cfg.data.batch_size
    total = steps_per_epoch * cfg.trainer.epochs
    if cfg.trainer.max_steps is not None:
        total = min(total, cfg.trainer.max_steps)
    tx, schedule = make_optimizer(cfg.optim, cfg.schedule, total)
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(cfg.seed))
    sample = jnp.zeros((1, *data.input_shape), data.x_train.dtype)
    params = jax.jit(model.init)(init_rng, sample)
    state = TrainState.create(model.apply, params["params"], tx, dropout_rng)
    rows = param_rows(state.params)
    n_params = sum(r[2] for r in rows)
    state = strategy.place(state)

    run_dir = handler = None
    metrics: Any = _NullMetrics()
    checkpoints = None
    if main:
        run_dir = create_run_dir(Path(cfg.outputs.dir), cfg.recipe)
        OmegaConf.save(cfg, run_dir / "config.yaml")
        overrides_yaml = OmegaConf.to_yaml(OmegaConf.create(list(overrides)))
        (run_dir / "overrides.yaml").write_text(overrides_yaml)
        command = ["dlx", "train", *overrides]
        write_json(run_dir / "meta.json", run_meta(jax.devices(), command))
        handler = attach_log_file(run_dir / "train.log")
        metrics = MetricsWriter(run_dir / "metrics.jsonl")
        if cfg.trainer.checkpoint:
            checkpoints = RunCheckpoints(run_dir / "checkpoints")
    summary: dict[str, Any] = {
        "status": "running",
        "recipe": cfg.recipe,
        "run_dir": str(run_dir),
        "param_count": n_params,
        "parallel": strategy.describe(),
        "processes": jax.process_count(),
    }
    _write_summary(run_dir, summary)
    try:
        console.info(f"run dir: {run_dir}")
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
        result = train_loop(
            cfg,
            data,
            state,
            schedule,
            strategy=strategy,
            console=console,
            metrics=metrics,
            checkpoints=checkpoints,
        )
        state, tested = result.state, "final"
        if result.best_params is not None:
            best = strategy.unreplicate(result.state).replace(params=result.best_params)
            state, tested = strategy.place(best), f"best (step {result.best.get('step')})"
        test = evaluate(state, data.x_test, data.y_test, cfg.data.eval_batch_size, strategy)
        test = {f"test/{k}": v for k, v in test.items()}
        metrics.write(
            {"step": result.steps, "epoch": result.epochs_completed, "checkpoint": tested, **test}
        )
        console.metrics_table(f"test, {tested} checkpoint", test)
        summary.update(
            status="finished",
            steps=result.steps,
            epochs=result.epochs_completed,
            best=result.best,
            val=result.last_eval,
            test=test,
            tested_checkpoint=tested,
            samples_per_sec=result.samples_per_sec,
            train_time_s=result.train_time_s,
            wall_time_s=time.time() - t0,
        )
        console.info(f"done in {summary['wall_time_s']:.1f}s: {run_dir}")
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
        metrics.close()
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
    return run_dir


def _write_summary(run_dir: Path | None, summary: dict) -> None:
    if run_dir is not None:
        write_json(run_dir / "summary.json", summary)


def _check_batch(cfg: DictConfig, data: Any) -> None:
    from dlx.errors import UserError

    if cfg.data.batch_size > len(data.x_train):
        raise UserError(
            f"data.batch_size={cfg.data.batch_size} is larger than the training set "
            f"({len(data.x_train)} examples)",
            hint=f"use data.batch_size={min(len(data.x_train), 128)} or fewer",
        )
