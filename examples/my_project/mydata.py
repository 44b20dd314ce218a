"""The user's own data loader, found by `_target_: mydata.load`.

It returns a plain mapping of numpy arrays; dlx carves the validation split out of the
training arrays (data.val_size), checks shapes, dtypes and label ranges, and standardises the
inputs with the training statistics. Any keys of the recipe's `data:` section that this
function takes are passed to it (here `noise`), and `seed` when it asks for one.
"""

from __future__ import annotations

import numpy as np


def load(seed: int, noise: float = 0.0) -> dict[str, np.ndarray]:
    """scikit-learn's bundled 8x8 digits as images (N, 8, 8, 1), a fixed 20% test split, and
    optional Gaussian pixel noise (a harder variant: `data.noise=0.3`)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(1234)  # the test split does not move with the run's seed
    order = rng.permutation(len(y))
    test, train = order[: len(y) // 5], order[len(y) // 5 :]
    if noise > 0:
        x = x + np.random.default_rng(seed).normal(0, noise, x.shape).astype(np.float32)
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}
