"""scikit-learn's bundled 8x8 digits (1797 images, values 0..16) -> NHWC float32."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dlx.data.dataset import Dataset
from dlx.data.splits import build_dataset, split_off
from dlx.errors import DataError

TEST_FRACTION = 0.2
TEST_SEED = 0  # fixed: the test set must not change with the run's seed


def load_digits(cfg: Mapping[str, Any], seed: int) -> Dataset:
    """Digits with a fixed 20% test split (seed 0); val is carved from the rest by ``seed``."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits  # heavy: import lazily
    except ImportError as err:
        raise DataError(
            "the digits dataset needs scikit-learn, which is not installed",
            hint="pip install scikit-learn",
        ) from err
    bunch = sklearn_digits()
    x = np.asarray(bunch.data).reshape(-1, 8, 8, 1)
    y = np.asarray(bunch.target)
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
        source="scikit-learn load_digits() (bundled with the package)",
    )
