"""Datasets as numpy arrays, plus fixed-size batching. numpy only: no jax import here.

``load_dataset(cfg, seed)`` takes the ``data`` config section (a plain mapping) and returns
a ``Dataset``; ``epoch_batches`` / ``eval_batches`` yield index batches of one fixed size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dlx.data.batching import epoch_batches, eval_batches
from dlx.data.dataset import Dataset
from dlx.data.digits import load_digits
from dlx.data.mnist import load_mnist
from dlx.data.mnist_1d import load_mnist1d
from dlx.data.mnist_rows import load_mnist_rows
from dlx.data.text import load_text
from dlx.errors import DataError, suggest

__all__ = ["DATASETS", "Dataset", "epoch_batches", "eval_batches", "load_dataset"]

# Registry: data.name -> loader(cfg, seed). Heavy dependencies are imported inside loaders.
DATASETS: dict[str, Callable[[Mapping[str, Any], int], Dataset]] = {
    "mnist": load_mnist,
    "digits": load_digits,
    "mnist1d": load_mnist1d,
    "mnist_rows": load_mnist_rows,
    "text": load_text,
}


def load_dataset(cfg: Mapping[str, Any], seed: int) -> Dataset:
    """Load the dataset named by ``cfg["name"]`` with its train/val split drawn from ``seed``.

    Raises DataError (a UserError) for unknown names, bad options or unavailable data.
    """
    if not isinstance(cfg, Mapping):
        raise DataError(f"the data config section must be a mapping, got {type(cfg).__name__}")
    name = cfg.get("name")
    if not isinstance(name, str) or name not in DATASETS:
        known = ", ".join(sorted(DATASETS))
        hint = suggest(name, DATASETS) if isinstance(name, str) else ""
        raise DataError(f"unknown data.name {name!r}; known datasets: {known}.{hint}")
    return DATASETS[name](cfg, seed)
