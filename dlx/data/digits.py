"""scikit-learn's bundled 8x8 digits (1797 images, values 0..16) -> NHWC float32.

The CSV scikit-learn ships is read directly (numpy + gzip, as `sklearn.datasets.load_digits`
reads it): importing scikit-learn costs ~2 s (scipy, pandas), more than a short run trains.
`find_spec` locates the package without importing it; should a future scikit-learn move the
file, its own loader is used instead, so the arrays are always the same.
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dlx.data.dataset import Dataset
from dlx.data.splits import build_dataset, split_off
from dlx.errors import DataError

TEST_FRACTION = 0.2
TEST_SEED = 0  # fixed: the test set must not change with the run's seed
CSV = ("datasets", "data", "digits.csv.gz")  # inside the sklearn package


def bundled_csv() -> Path | None:
    """scikit-learn's digits.csv.gz, found without importing scikit-learn (None if absent)."""
    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root).joinpath(*CSV)
        if path.is_file():
            return path
    return None


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(data float64 (1797, 64), target int64 (1797,)): what `load_digits()` returns."""
    path = bundled_csv()
    if path is not None:
        with gzip.open(path, mode="rt", encoding="utf-8") as f:
            table = np.loadtxt(f, delimiter=",")
        return table[:, :-1], table[:, -1].astype(int, copy=False)
    try:
        from sklearn.datasets import load_digits as sklearn_digits  # heavy: only as a fallback
    except ImportError as err:
        raise DataError(
            "the digits dataset needs scikit-learn, which is not installed",
            hint="pip install scikit-learn",
        ) from err
    bunch = sklearn_digits()
    return np.asarray(bunch.data), np.asarray(bunch.target)


def load_digits(cfg: Mapping[str, Any], seed: int) -> Dataset:
    """Digits with a fixed 20% test split (seed 0); val is carved from the rest by ``seed``."""
    data, y = digits_arrays()
    x = data.reshape(-1, 8, 8, 1)
    n_test = round(TEST_FRACTION * len(y))
    x_rest, y_rest, x_test, y_test = split_off(x, y, n_test, TEST_SEED)
    return build_dataset(
        "digits",
        cfg,
        seed,
        train=(x_rest, y_rest),
        test=(x_test, y_test),
        val_default=0.1,
        num_classes=10,
        scale=16.0,
        source="scikit-learn's bundled digits.csv.gz",
    )
