"""Seeded train/val splitting, eval limits and normalisation shared by all loaders."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dlx.data.config import get_bool, get_limit, resolve_val_size
from dlx.data.dataset import Dataset
from dlx.errors import DataError

# One split's arrays: (x, y), or a mapping with "x", "y" and optionally "lengths".
SplitArrays = tuple[np.ndarray, np.ndarray] | Mapping[str, np.ndarray]


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
    rest, held = split_indices(len(y), count, seed)
    return x[rest], y[rest], x[held], y[held]


def split_indices(n: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held): the permutation of ``split_off`` as indices, for any set of arrays."""
    perm = np.random.default_rng(seed).permutation(n)
    return perm[count:], perm[:count]


def _as_split(arrays: SplitArrays) -> dict[str, np.ndarray]:
    if isinstance(arrays, Mapping):
        return dict(arrays)
    x, y = arrays
    return {"x": x, "y": y}


def _valid_steps(x: np.ndarray, lengths: np.ndarray | None) -> np.ndarray | None:
    """Boolean (N, T) mask of the real (not padding) steps of padded sequences, or None."""
    if lengths is None:
        return None
    return np.arange(x.shape[1])[None, :] < np.asarray(lengths)[:, None]


def _stats(
    x: np.ndarray, scale: float, per_channel: bool, lengths: np.ndarray | None
) -> tuple[Any, Any]:
    """Mean and std of ``x / scale`` over the real values (padding excluded): scalars, or one
    per entry of the last axis with ``per_channel`` (features of a table, colour channels)."""
    x64 = x.astype(np.float64) / scale
    mask = _valid_steps(x, lengths)
    if mask is not None:
        x64 = x64[mask]  # (real steps, *feature dims)
    if len(x64) == 0:
        return 0.0, 1.0
    if per_channel and x64.ndim >= 2:
        axes = tuple(range(x64.ndim - 1))
        mean, std = x64.mean(axis=axes), x64.std(axis=axes)
        std = np.where(std > 0, std, 1.0)  # a constant feature would otherwise become NaN
        return mean.astype(np.float32), std.astype(np.float32)
    mean, std = float(x64.mean()), float(x64.std())
    return mean, (std if std > 0 else 1.0)


def build_dataset(
    name: str,
    cfg: Mapping[str, Any],
    seed: int,
    *,
    train: SplitArrays,
    test: SplitArrays,
    val_default: int | float,
    num_classes: int,
    scale: float = 1.0,
    source: str,
    fixed_stats: tuple[float, float] | None = None,
    val: SplitArrays | None = None,
    task: str = "classify",
    per_channel: bool = False,
    normalize: bool | None = None,
    normalize_target: bool = False,
    tokens: bool = False,
    classes: tuple[str, ...] | None = None,
) -> Dataset:
    """Carve val out of ``train`` by ``seed`` (unless ``val`` is given), apply limits and
    normalisation, cast dtypes.

    x values are divided by ``scale``; with data.normalize (default true; ``normalize``
    overrides the key) they are then standardised with ``fixed_stats`` (mean, std) if given,
    else with the mean/std of the training split (computed before data.limit_train, so a
    limit doesn't change the scaling): one scalar pair, or one per entry of the last axis
    with ``per_channel``. A split may carry ``lengths`` (padded sequences, (N, T, ...) x): the
    statistics skip the padding, which stays 0, and the lengths go to ``Dataset.extra``.
    ``tokens`` keeps x as int32 ids (no scaling). ``task`` "regress" keeps y as float32,
    standardised per column with ``normalize_target``; otherwise y are int32 labels.
    """
    seed = check_seed(seed)
    train_arrays, test_arrays = _as_split(train), _as_split(test)
    if val is None:
        val_count = resolve_val_size(cfg, len(train_arrays["y"]), val_default)
        rest, held = split_indices(len(train_arrays["y"]), val_count, seed)
        val_arrays = {k: v[held] for k, v in train_arrays.items()}
        tr = {k: v[rest] for k, v in train_arrays.items()}
    else:
        val_arrays, tr = _as_split(val), train_arrays
    splits = {"train": tr, "val": val_arrays, "test": test_arrays}
    x_shape = train_arrays["x"].shape[1:]

    mean: Any = 0.0
    std: Any = 1.0
    do_norm = get_bool(cfg, "normalize", True) if normalize is None else normalize
    if do_norm and not tokens:
        if fixed_stats is not None:
            mean, std = fixed_stats
        else:
            mean, std = _stats(tr["x"], scale, per_channel, tr.get("lengths"))
    y_mean: Any = 0.0
    y_std: Any = 1.0
    if task == "regress" and normalize_target and len(tr["y"]):
        y64 = tr["y"].astype(np.float64)
        y_mean, y_std = y64.mean(axis=0), y64.std(axis=0)
        y_std = np.where(y_std > 0, y_std, 1.0)
        source = f"{source}; {_target_note(y_mean, y_std)}"

    limit_train, limit_eval = get_limit(cfg, "limit_train"), get_limit(cfg, "limit_eval")
    # Limit before casting so a tiny run never materialises the full float32 arrays.
    limits = {"train": limit_train, "val": limit_eval, "test": limit_eval}
    splits = {s: {k: v[: limits[s]] for k, v in arrays.items()} for s, arrays in splits.items()}

    def to_x(x: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
        if tokens:
            return np.ascontiguousarray(x, dtype=np.int32)
        out = (x.astype(np.float32) / np.float32(scale) - np.float32(mean)) / np.float32(std)
        mask = _valid_steps(x, lengths)
        if mask is not None:
            out[~mask] = 0.0  # padding stays zero whatever the statistics
        return np.ascontiguousarray(out, dtype=np.float32)

    def to_y(y: np.ndarray) -> np.ndarray:
        if task == "regress":
            out = (y.astype(np.float64) - y_mean) / y_std
            return np.ascontiguousarray(out, dtype=np.float32)
        return np.ascontiguousarray(y, dtype=np.int32)

    out: dict[str, Any] = {}
    for split, arrays in splits.items():
        out[f"x_{split}"] = to_x(arrays["x"], arrays.get("lengths"))
        out[f"y_{split}"] = to_y(arrays["y"])
    extra = {}
    if "lengths" in tr:
        extra["lengths"] = {
            s: np.ascontiguousarray(a["lengths"], dtype=np.int32) for s, a in splits.items()
        }
    return Dataset(
        name=name,
        **out,
        num_classes=num_classes,
        input_shape=tuple(int(d) for d in x_shape),
        source=source,
        task="regress" if task == "regress" else "classify",
        extra=extra,
        classes=classes,
    )


def _target_note(mean: np.ndarray, std: np.ndarray) -> str:
    """How standardised regression targets relate to the file's units (for Dataset.source)."""
    pairs = ", ".join(
        f"{m:.4g}/{d:.4g}" for m, d in zip(np.ravel(mean), np.ravel(std), strict=True)
    )
    return f"targets standardised with train mean/std {pairs} (mae and rmse are in those units)"
