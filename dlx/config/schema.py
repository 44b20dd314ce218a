"""Typed schema of the composed config: catches wrong value types with a clear message.

Model sections vary per architecture, so `model` is checked against the model's own
fields when it is built (dlx.models), not here.
"""

from __future__ import annotations

import math
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
class AugmentConfig:
    """Image augmentation in the train step (dlx/tasks/augment.py); all off by default."""

    flip: bool = False
    crop: int = 0
    cutout: int = 0
    eval_flip: bool = False


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
    precision: str = "fp32"  # fp32 | bf16 (bf16 compute; params, optimizer, loss in fp32)
    grad_accum: int = 1  # micro-batches per update (data.batch_size is the whole update)
    checkpoint_every_steps: int | None = None  # also checkpoint every N steps (mid-epoch)
    checkpoint_every_minutes: float | None = 15.0  # and at least this often (wall clock)
    keep_checkpoints: int = 2  # latest checkpoints kept (best keeps one)
    eval_every_steps: int | None = None  # also evaluate every N steps (mid-epoch)
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
    augment: AugmentConfig = field(default_factory=AugmentConfig)
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
    "parallel.name": ("auto", "single", "pmap", "sharded", "fsdp"),
    "trainer.precision": ("fp32", "bf16"),
    "trainer.early_stopping.mode": (None, "max", "min"),
}
POSITIVE = (
    "data.batch_size",
    "data.eval_batch_size",
    "trainer.epochs",
    "trainer.log_every",
    "trainer.sync_every",
    "trainer.eval_every",
    "trainer.grad_accum",
    "trainer.keep_checkpoints",
    "optim.lr",
)


@dataclass(frozen=True)
class Range:
    """Values a numeric setting may take: finite, within [low, high] (open where marked)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False
    example: str = ""

    def holds(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (
            self.high is not None and (value >= self.high if self.high_open else value > self.high)
        )

    def describe(self) -> str:
        lo = "(" if self.low_open else "["
        hi = ")" if self.high_open or self.high is None else "]"
        low = "-inf" if self.low is None else _number(self.low)
        high = "inf" if self.high is None else _number(self.high)
        return f"a finite number in {lo}{low}, {high}{hi}" + (" or null" if self.nullable else "")


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# Settings with bounds beyond their type (POSITIVE covers the plain > 0 ones).
RANGES = {
    "optim.lr": Range(0, None, low_open=True, example="optim.lr=1e-3"),
    "optim.b1": Range(0, 1, high_open=True, example="optim.b1=0.9"),
    "optim.b2": Range(0, 1, high_open=True, example="optim.b2=0.999"),
    "optim.eps": Range(0, None, low_open=True, example="optim.eps=1e-8"),
    "optim.momentum": Range(0, 1, example="optim.momentum=0.9"),
    "optim.weight_decay": Range(0, None, example="optim.weight_decay=1e-4"),
    "optim.clip_norm": Range(0, None, low_open=True, nullable=True, example="optim.clip_norm=1.0"),
    "schedule.warmup_fraction": Range(0, 1, example="schedule.warmup_fraction=0.05"),
    "schedule.final_fraction": Range(0, 1, example="schedule.final_fraction=0.0"),
    "trainer.early_stopping.patience": Range(
        1, None, nullable=True, example="trainer.early_stopping.patience=3"
    ),
    "augment.crop": Range(0, None, example="augment.crop=2"),
    "augment.cutout": Range(0, None, example="augment.cutout=8"),
    "trainer.checkpoint_every_steps": Range(
        1, None, nullable=True, example="trainer.checkpoint_every_steps=500"
    ),
    "trainer.checkpoint_every_minutes": Range(
        0, None, low_open=True, nullable=True, example="trainer.checkpoint_every_minutes=15"
    ),
    "trainer.eval_every_steps": Range(
        1, None, nullable=True, example="trainer.eval_every_steps=1000"
    ),
    "seed": Range(0, 2**32 - 1, example="seed=0"),
    "parallel.devices": Range(1, None, nullable=True, example="parallel.devices=2"),
    "dist.num_processes": Range(1, None, nullable=True, example="dist.num_processes=2"),
    "dist.process_id": Range(0, None, nullable=True, example="dist.process_id=0"),
    "dist.timeout": Range(0, None, low_open=True, example="dist.timeout=300"),
    "data.timeout": Range(0, None, low_open=True, example="data.timeout=10"),
}
