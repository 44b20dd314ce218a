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
        raise DataError(f"data.{key} must be a positive integer or null, got {value!r}")
    return value


def resolve_val_size(cfg: Mapping[str, Any], n_train: int, default: int | float) -> int:
    """Number of validation examples: an int count, or a float fraction of the training set."""
    value = cfg.get("val_size", default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"data.val_size must be an integer or a fraction, got {value!r}")
    if isinstance(value, float):
        if not 0.0 <= value < 1.0:
            raise DataError(f"data.val_size as a fraction must be in [0, 1), got {value!r}")
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
        raise DataError(f"data.cache_dir must be a folder path, got {value!r}")
    return Path(value).expanduser()
