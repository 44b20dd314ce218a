"""Reading and checking the options of the ``data`` config section."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dlx.errors import DataError


def get_bool(cfg: Mapping[str, Any], key: str, default: bool) -> bool:
    value = cfg.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise DataError(f"data.{key} must be true or false, got {value!r}")
    return value


def get_float(cfg: Mapping[str, Any], key: str, default: float) -> float:
    value = cfg.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise DataError(f"data.{key} must be a positive number, got {value!r}")
    return float(value)


def get_limit(cfg: Mapping[str, Any], key: str) -> int | None:
    """``limit_train`` / ``limit_eval``: None (keep everything) or a positive int."""
    value = cfg.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(
            f"data.{key} must be a positive integer or null, got {value!r}",
            hint=f"e.g. data.{key}=1000, or data.{key}=null for all of it",
        )
    return value


def resolve_val_size(cfg: Mapping[str, Any], n_train: int, default: int | float) -> int:
    """Number of validation examples: an int count, or a float fraction of the training set."""
    value = cfg.get("val_size", default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(
            f"data.val_size must be an integer or a fraction, got {value!r}",
            hint="e.g. data.val_size=0.1 (a fraction of train) or data.val_size=500",
        )
    if isinstance(value, float):
        if not 0.0 <= value < 1.0:
            raise DataError(
                f"data.val_size as a fraction must be in [0, 1), got {value!r}",
                hint="e.g. data.val_size=0.1 (a fraction of train) or data.val_size=500",
            )
        count = round(value * n_train)
    else:
        count = value
    # At least one training example must remain; val may be empty (train on everything).
    if not 0 <= count < n_train:
        raise DataError(
            f"data.val_size={value!r} leaves no training data: the training set has "
            f"{n_train} examples",
            hint=f"use a val_size between 0 and {n_train - 1}, or a fraction like 0.1",
        )
    return count


def cache_dir(cfg: Mapping[str, Any]) -> Path:
    """``data.cache_dir``, else ``$DLX_CACHE``, else ``~/.cache/dlx``."""
    value = cfg.get("cache_dir") or os.environ.get("DLX_CACHE") or "~/.cache/dlx"
    if not isinstance(value, (str, os.PathLike)):
        raise DataError(
            f"data.cache_dir must be a folder path, got {value!r}",
            hint="e.g. data.cache_dir=~/.cache/dlx",
        )
    return Path(value).expanduser()


def get_path(cfg: Mapping[str, Any], key: str, what: str, hint: str | None = None) -> Path:
    """A required path option (``what`` says what it must point at, e.g. "a .npz file")."""
    value = cfg.get(key)
    if value is None or not isinstance(value, (str, os.PathLike)) or not str(value):
        raise DataError(
            f"data.{key} must be {what}, got {value!r}",
            hint=hint or f"pass data.{key}=/path/to/{what.split()[-1]}",
        )
    return Path(value).expanduser()


def get_int(cfg: Mapping[str, Any], key: str, default: int | None, minimum: int = 0) -> int | None:
    """An integer option >= ``minimum`` (None keeps the default)."""
    value = cfg.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"data.{key} must be an integer >= {minimum}, got {value!r}")
    return value


def get_fraction(cfg: Mapping[str, Any], key: str, default: float) -> float:
    """A fraction in (0, 1), e.g. data.test_size."""
    value = cfg.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise DataError(
            f"data.{key} must be a fraction between 0 and 1, got {value!r}",
            hint=f"e.g. data.{key}=0.2",
        )
    return float(value)


def get_names(cfg: Mapping[str, Any], key: str) -> list[str | int] | None:
    """A list of column names (or integer positions), a single one, or None."""
    value = cfg.get(key)
    if value is None:
        return None
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise DataError(
                f"data.{key} must be a column name or a list of them, got {value!r}",
                hint=f"e.g. data.{key}=[age,income]",
            )
    return items


def get_choice(cfg: Mapping[str, Any], key: str, default: Any, choices: tuple) -> Any:
    """One of ``choices`` (compared with ==, booleans only to booleans)."""
    value = cfg.get(key, default)
    if value is None:
        return default
    for choice in choices:
        if type(value) is type(choice) and value == choice:
            return value
    shown = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
    raise DataError(f"data.{key} must be one of {shown}; got {value!r}")


def requested_task(cfg: Mapping[str, Any]) -> str:
    """The task the run asks for (``task.name``, passed in by dlx.setup as ``data.task``):
    "auto" when not given, so a loader called on its own follows its data."""
    value = cfg.get("task") or "auto"
    return str(value)
