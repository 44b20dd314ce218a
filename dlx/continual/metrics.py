"""Continual-learning metrics from the accuracy matrix R.

R[i][j] is the accuracy on task j after training on tasks 0..i (T x T). Definitions:
Lopez-Paz & Ranzato 2017 (GEM: ACC, BWT, FWT) and Chaudhry et al. 2018 (RWalk: forgetting).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _matrix(r: Sequence[Sequence[float]]) -> np.ndarray:
    r = np.asarray(r, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] == 0:
        raise ValueError(f"R must be a non-empty square matrix, got shape {r.shape}")
    return r


def average_accuracy(r: Sequence[Sequence[float]]) -> float:
    """ACC = mean_j R[T-1][j]: accuracy over every task at the end of the stream."""
    return float(_matrix(r)[-1].mean())


def backward_transfer(r: Sequence[Sequence[float]]) -> float:
    """BWT = mean_{i<T-1} (R[T-1][i] - R[i][i]): how later tasks changed earlier ones
    (negative = forgetting). 0 for a single task."""
    r = _matrix(r)
    t = len(r)
    if t == 1:
        return 0.0
    return float(np.mean([r[-1, i] - r[i, i] for i in range(t - 1)]))


def forgetting_per_task(r: Sequence[Sequence[float]]) -> list[float]:
    """f_i = max_{l<T-1} R[l][i] - R[T-1][i] for each task i < T-1: the drop from its best."""
    r = _matrix(r)
    t = len(r)
    return [float(r[: t - 1, i].max() - r[-1, i]) for i in range(t - 1)]


def forgetting(r: Sequence[Sequence[float]]) -> float:
    """Average forgetting: mean of forgetting_per_task (0 for a single task)."""
    f = forgetting_per_task(r)
    return float(np.mean(f)) if f else 0.0


def forward_transfer(r: Sequence[Sequence[float]], init: Sequence[float]) -> float:
    """FWT = mean_{i>0} (R[i-1][i] - b_i), b_i the accuracy of the initial model on task i:
    what training on earlier tasks does for a task not trained yet."""
    r = _matrix(r)
    t = len(r)
    if t == 1:
        return 0.0
    return float(np.mean([r[i - 1, i] - init[i] for i in range(1, t)]))


def accuracy_after_each_task(r: Sequence[Sequence[float]]) -> list[float]:
    """mean_{j<=i} R[i][j] for each i: average accuracy over the tasks seen so far."""
    r = _matrix(r)
    return [float(r[i, : i + 1].mean()) for i in range(len(r))]


def summarize(r: Sequence[Sequence[float]], init: Sequence[float] | None = None) -> dict:
    out = {
        "average_accuracy": average_accuracy(r),
        "backward_transfer": backward_transfer(r),
        "forgetting": forgetting(r),
        "forgetting_per_task": forgetting_per_task(r),
        "accuracy_after_each_task": accuracy_after_each_task(r),
    }
    if init is not None:
        out["forward_transfer"] = forward_transfer(r, init)
    return out
