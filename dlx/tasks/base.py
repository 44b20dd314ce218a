"""The Task: what a run trains. The engine (setup, loop, strategies, checkpoints, session)
never knows which task it runs; it only calls these methods.

A task is a frozen dataclass: equal tasks hash equal, so the strategies' jitted steps (which
take the task as a static argument) compile once per process for every run of the same
model and settings.

Writing one (see docs/architecture.md): subclass `Task`, give it a `name`, and implement
`init`, `train_step`, `eval_step` and `summarize`; `host_batch`, `epoch_end` and the class
attributes have defaults. `train_step(state, batch, axis)` is written once for every strategy
with the helpers of dlx/training/step.py (`global_sum`, `shard_mean`, `mean_grads`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from dlx.training.step import TrainState


class Task:
    name: ClassVar[str] = "task"
    # Defaults for trainer.best_metric / best_mode when the recipe leaves them unset.
    best_metric: ClassVar[str] = "val/accuracy"
    best_mode: ClassVar[str] = "max"
    # The names `summarize` returns (val/<name> in a run), when fixed: trainer.best_metric is
    # checked against them before training. None: known only after the first eval.
    metrics: ClassVar[tuple[str, ...] | None] = None
    # Train metrics shown on the console line (all of them go to metrics.jsonl).
    shown: ClassVar[tuple[str, ...]] = ("loss", "accuracy")

    def init(self, rng: Any, example: dict[str, np.ndarray], tx: Any) -> TrainState:
        """A fresh TrainState; `example` is a batch of one, shaped like the real ones."""
        raise NotImplementedError

    def train_step(self, state: TrainState, batch: dict, axis: str | None) -> tuple[Any, dict]:
        """One update; returns the new state and scalar metrics (global over devices)."""
        raise NotImplementedError

    def eval_step(self, state: TrainState, batch: dict, axis: str | None) -> dict:
        """Sums over the real examples (`batch["mask"]`) of one padded eval batch; global
        over devices (psum under pmap). `summarize` turns the split's total into metrics."""
        raise NotImplementedError

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        raise NotImplementedError

    def host_batch(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The batch dict the step takes, built on the host from a dataset's rows (`x`, `y`
        and the dataset's extra arrays such as `lengths`)."""
        return rows

    def epoch_end(self, state: TrainState, epoch: int, out_dir: Path | None) -> dict[str, Any]:
        """After each val eval (one-device `state`): extra val metrics and files (a GAN's
        sample grid and quality scores). `out_dir` is the run dir (None off process 0)."""
        return {}
