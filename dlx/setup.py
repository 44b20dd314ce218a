"""One set-up for every kind of run: `build(cfg)` -> data, task (and its model), optimizer,
schedule, strategy, runtime and compile cache. Used by `dlx train` (standard and continual
runs), restoring a run (`dlx eval`, `explain`, `sample`, `init_from=`), the Python API and
the benchmarks. Everything here that can fail on bad input fails before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dlx.errors import UserError, suggest


@dataclass
class Setup:
    cfg: DictConfig  # trainer.best_metric / best_mode resolved from the task's defaults
    data: Any  # dlx.data.Dataset
    task: Any  # dlx.tasks.Task
    strategy: Any  # dlx.training.parallel.Strategy
    tx: Any
    schedule: Any  # step -> learning rate
    total_steps: int  # the steps the schedule spans

    def example(self) -> dict[str, np.ndarray]:
        """A batch of one, zeros shaped like the training data (what init traces)."""
        rows = {
            k: np.zeros((1, *v.shape[1:]), v.dtype) for k, v in self.data.arrays("train").items()
        }
        return self.task.host_batch(rows)

    def init_state(self) -> Any:
        """A fresh TrainState on the host's default device (not yet placed).

        Jitted as one program: eagerly, the key split and the optimizer's init dispatch op
        by op (each its own small program), which took ~0.2 s of a short run's start more
        than loading one cached program. The values are the same bits either way."""
        import jax

        def init(rng: Any, example: dict) -> Any:
            return self.task.init(rng, example, self.tx)

        return jax.jit(init)(jax.random.PRNGKey(self.cfg.seed), self.example())

    def template_state(self) -> Any:
        """A TrainState of shapes only (values get restored over it): eval_shape skips running
        the initialisers, which dominated the time to load a run."""
        import jax

        example = self.example()
        return jax.eval_shape(lambda: self.task.init(jax.random.PRNGKey(0), example, self.tx))


def standard_steps(cfg: DictConfig, data: Any) -> int:
    """Steps of a standard run: full batches over the epochs, capped by max_steps."""
    from dlx.training.loop import total_steps

    tr = cfg.trainer
    return total_steps(len(data.x_train), int(cfg.data.batch_size), tr.epochs, tr.max_steps)


def build(
    cfg: DictConfig,
    *,
    schedule_steps: Callable[[DictConfig, Any], int] = standard_steps,
    strategy: str | None = None,
    runtime: bool = True,
) -> Setup:
    """Everything a run needs, from its config. `strategy` overrides parallel.name (restoring
    a run evaluates on one device); `runtime=False` leaves JAX's devices and flags as they
    are (a run loaded in a process that already trains)."""
    from dlx.data import load_dataset
    from dlx.runtime import configure_runtime, enable_compile_cache
    from dlx.tasks import make_task

    # Data (numpy) and the task's model come first: they size the CPU platform, which must
    # be set before any JAX computation starts the backend.
    # data.task: the requested task (raw, "auto" stays "auto"), so a loader reads targets for it.
    task_name = (cfg.get("task") or {}).get("name", "auto")  # an old run's config may lack it
    data_cfg = {**OmegaConf.to_container(cfg.data, resolve=True), "task": task_name}
    data = load_dataset(data_cfg, seed=cfg.seed)
    task = make_task(cfg, data)
    if runtime:
        model = getattr(task, "model", None)
        configure_runtime(cfg.parallel, cfg.dist, cfg.data.batch_size, model, data.x_train[:1])
    enable_compile_cache()
    from dlx.training.optim import make_optimizer
    from dlx.training.parallel import make_strategy

    cfg = resolve_best(cfg, task)
    steps = schedule_steps(cfg, data)
    tx, schedule = make_optimizer(cfg.optim, cfg.schedule, steps)
    chosen = make_strategy(
        strategy or cfg.parallel.name, None if strategy else cfg.parallel.devices
    )
    return Setup(cfg, data, task, chosen, tx, schedule, steps)


def resolve_best(cfg: DictConfig, task: Any) -> DictConfig:
    """trainer.best_metric / best_mode: the recipe's, else the task's defaults."""
    cfg = cfg.copy()
    if cfg.trainer.get("best_metric") is None:
        cfg.trainer.best_metric = task.best_metric
    if cfg.trainer.get("best_mode") is None:
        cfg.trainer.best_mode = metric_mode(cfg.trainer.best_metric, task)
    if task.metrics is not None and not cfg.get("continual"):
        names = [f"val/{m}" for m in task.metrics]
        for key, metric in (
            ("trainer.best_metric", cfg.trainer.best_metric),
            ("trainer.early_stopping.metric", cfg.trainer.early_stopping.get("metric")),
        ):
            if metric is not None and metric not in names:
                raise UserError(
                    f"{key}={metric} is not a metric of task {task.name}.{suggest(metric, names)}",
                    hint=f"its val metrics: {', '.join(names)}",
                )
    stop = cfg.trainer.early_stopping
    if stop.get("mode") is None and stop.get("metric") not in (None, cfg.trainer.best_metric):
        stop.mode = metric_mode(stop.metric, task)
    return cfg


# Metrics where lower is better, by the end of their name (val/loss, val/d_loss, val/fid...).
LOWER_IS_BETTER = ("loss", "error", "mae", "mse", "rmse", "perplexity", "bits_per_char", "fid")


def metric_mode(metric: str, task: Any) -> str:
    """min or max for a metric the user names without a mode: the task's own for its default
    metric, min for losses and errors, else max (accuracy, r2, ...)."""
    if metric == task.best_metric:
        return task.best_mode
    return "min" if metric.rsplit("/", 1)[-1].endswith(LOWER_IS_BETTER) else "max"


def check_batches(
    setup: Setup, batch_size: int, what: str = "data.batch_size", whole_set: bool = True
) -> None:
    """The batch (`what` names it) splits over the devices (into trainer.grad_accum
    micro-batches on each) and, with `whole_set`, fits the training set."""
    setup.strategy.check_batch(batch_size, what)
    accum, devices = int(setup.cfg.trainer.get("grad_accum", 1)), setup.strategy.n
    if batch_size % (accum * devices):
        unit = accum * devices
        fits = next(k for k in range(accum, 0, -1) if (batch_size // devices) % k == 0)
        raise UserError(
            f"{what}={batch_size} cannot be split into trainer.grad_accum={accum} "
            f"micro-batches on each of {devices} device(s)",
            hint=f"use a multiple of {unit} (grad_accum x devices), e.g. data.batch_size="
            f"{-(-batch_size // unit) * unit}, or trainer.grad_accum={fits}",
        )
    n = len(setup.data.x_train)
    if whole_set and setup.cfg.data.batch_size > n:
        raise UserError(
            f"data.batch_size={setup.cfg.data.batch_size} is larger than the training set "
            f"({n} examples)",
            hint=f"use data.batch_size={min(n, 128)} or fewer",
        )
