"""Typed schema of the composed config: catches wrong value types with a clear message.

Model sections vary per architecture, so `model` is checked against the model's own
fields when it is built (dlx.models), not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DataConfig:
    name: str = "mnist"
    path: str | None = None
    batch_size: int = 128
    eval_batch_size: int = 1000
    val_size: Any = None  # int: a count; float in (0, 1): a fraction of train; None: the
    # dataset's default (conf/data/<name>.yaml sets it; 0.1 for a loader of your own)
    normalize: bool = True
    limit_train: int | None = None
    limit_eval: int | None = None
    download: bool = True
    timeout: float = 10.0
    cache_dir: str | None = None
    verify: bool = True


@dataclass
class OptimConfig:
    name: str = "adam"
    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    clip_norm: float | None = None


@dataclass
class ScheduleConfig:
    name: str = "constant"
    warmup_fraction: float = 0.0
    final_fraction: float = 0.0


@dataclass
class EarlyStoppingConfig:
    patience: int | None = None
    metric: str | None = None
    mode: str | None = None


@dataclass
class TrainerConfig:
    epochs: int = 3
    max_steps: int | None = None
    log_every: int = 50
    sync_every: int = 16
    eval_every: int = 1
    checkpoint: bool = True
    best_metric: str | None = None  # None: the task's default (dlx/tasks)
    best_mode: str | None = None
    progress: str = "auto"
    profile: bool = False  # jax.profiler trace of trainer.profile_steps into <run>/profile
    profile_steps: list[int] = field(default_factory=lambda: [10, 15])  # first, last
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class ParallelConfig:
    name: str = "auto"
    devices: int | None = None
    cpu_devices: Any = "auto"
    xla_flags: str | None = None


@dataclass
class DistConfig:
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    initialize: bool = False
    timeout: int = 300


@dataclass
class OutputsConfig:
    dir: str = "outputs"


@dataclass
class DlxConfig:
    recipe: str = "cnn"
    seed: int = 0
    init_from: str | None = None  # a run dir: start from its best params (fresh optimizer)
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    # logger name -> its settings (conf/logger/*.yaml); metrics.jsonl is always written
    logger: dict[str, Any] = field(default_factory=dict)
    # what the run trains (dlx/tasks): name auto|classify|lm|regress|gan, plus its settings
    task: dict[str, Any] = field(default_factory=lambda: {"name": "auto"})
    continual: Any = None  # a task stream (dlx/continual): set by recipes/continual*.yaml


CHOICES = {
    "trainer.best_mode": (None, "max", "min"),
    "trainer.progress": ("auto", "rich", "plain", "none"),
    "parallel.name": ("auto", "single", "pmap", "sharded"),
    "trainer.early_stopping.mode": (None, "max", "min"),
}
POSITIVE = (
    "data.batch_size",
    "data.eval_batch_size",
    "trainer.epochs",
    "trainer.log_every",
    "trainer.sync_every",
    "trainer.eval_every",
    "optim.lr",
)
