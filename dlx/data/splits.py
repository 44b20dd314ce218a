"""Seeded train/val splitting, eval limits and normalisation shared by all loaders."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dlx.data.config import get_bool, get_limit, resolve_val_size
from dlx.data.dataset import Dataset
from dlx.errors import DataError


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def split_off(
    x: np.ndarray, y: np.ndarray, count: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold out ``count`` random examples: returns (x_rest, y_rest, x_held, y_held).

    The permutation depends only on ``seed`` and ``len(y)``, so the same seed always gives the
    same split. The rest keeps the permuted order, so "the first N" of it (data.limit_train) is
    a random, roughly class-balanced subset rather than whatever order the files had.
    """
    perm = np.random.default_rng(seed).permutation(len(y))
    held, rest = perm[:count], perm[count:]
    return x[rest], y[rest], x[held], y[held]


def build_dataset(
    name: str,
    cfg: Mapping[str, Any],
    seed: int,
    *,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    val_default: int | float,
    num_classes: int,
    scale: float,
    source: str,
    fixed_stats: tuple[float, float] | None = None,
) -> Dataset:
    """Carve val out of ``train`` by ``seed``, apply limits and normalisation, cast dtypes.

    x values are divided by ``scale``; with data.normalize (default true) they are then
    standardised with ``fixed_stats`` (mean, std) if given, else with the mean/std of the
    training split (computed before data.limit_train, so a limit doesn't change the scaling).
    """
    seed = check_seed(seed)
    x_all, y_all = train
    val_count = resolve_val_size(cfg, len(y_all), val_default)
    x_tr, y_tr, x_val, y_val = split_off(x_all, y_all, val_count, seed)
    x_te, y_te = test

    mean, std = 0.0, 1.0
    if get_bool(cfg, "normalize", True):
        if fixed_stats is not None:
            mean, std = fixed_stats
        else:
            scaled = x_tr.astype(np.float64) / scale
            mean, std = float(scaled.mean()), float(scaled.std())
            std = std if std > 0 else 1.0  # a constant input would otherwise become NaN

    limit_train, limit_eval = get_limit(cfg, "limit_train"), get_limit(cfg, "limit_eval")
    # Limit before casting so a tiny run never materialises the full float32 arrays.
    x_tr, y_tr = x_tr[:limit_train], y_tr[:limit_train]
    x_val, y_val = x_val[:limit_eval], y_val[:limit_eval]
    x_te, y_te = x_te[:limit_eval], y_te[:limit_eval]

    def to_x(x: np.ndarray) -> np.ndarray:
        out = (x.astype(np.float32) / np.float32(scale) - np.float32(mean)) / np.float32(std)
        return np.ascontiguousarray(out, dtype=np.float32)

    def to_y(y: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(y, dtype=np.int32)

    return Dataset(
        name=name,
        x_train=to_x(x_tr),
        y_train=to_y(y_tr),
        x_val=to_x(x_val),
        y_val=to_y(y_val),
        x_test=to_x(x_te),
        y_test=to_y(y_te),
        num_classes=num_classes,
        input_shape=tuple(int(d) for d in x_all.shape[1:]),
        source=source,
    )
