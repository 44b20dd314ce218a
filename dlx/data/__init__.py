"""Datasets as numpy arrays, plus fixed-size batching. numpy only: no jax import here.

``load_dataset(cfg, seed)`` takes the ``data`` config section (a plain mapping) and returns
a ``Dataset``; ``epoch_batches`` / ``eval_batches`` yield index batches of one fixed size.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from dlx.data.batching import epoch_batches, eval_batches
from dlx.data.dataset import Dataset
from dlx.errors import DataError, suggest

__all__ = ["DATASETS", "Dataset", "epoch_batches", "eval_batches", "load_dataset"]

Loader = Callable[[Mapping[str, Any], int], Dataset]


def _lazy(module: str, name: str) -> Loader:
    """`module.name`, imported on the first call: a run imports only its own loader (the
    download and archive code of the others took ~50 ms of every start)."""

    def load(cfg: Mapping[str, Any], seed: int) -> Dataset:
        return getattr(importlib.import_module(f"dlx.data.{module}"), name)(cfg, seed)

    load.__name__ = load.__qualname__ = name
    return load


# Registry: data.name -> loader(cfg, seed). Heavy dependencies are imported inside loaders.
DATASETS: dict[str, Loader] = {
    "mnist": _lazy("mnist", "load_mnist"),
    "digits": _lazy("digits", "load_digits"),
    "mnist1d": _lazy("mnist_1d", "load_mnist1d"),
    "mnist_rows": _lazy("mnist_rows", "load_mnist_rows"),
    "text": _lazy("text", "load_text"),
    "fashion_mnist": _lazy("fashion_mnist", "load_fashion_mnist"),
    "arrays": _lazy("arrays", "load_arrays"),
    "csv": _lazy("tabular", "load_csv"),
    "image_folder": _lazy("image_folder", "load_image_folder"),
    "mapped": _lazy("mapped", "load_mapped"),  # larger than memory: .npy shards on disk
}


def load_dataset(cfg: Mapping[str, Any], seed: int) -> Dataset:
    """Load the dataset ``cfg`` describes, its train/val split drawn from ``seed``: a built-in
    ``name``, a ``_target_`` naming the user's loader function (dlx/data/user.py), or a name
    an installed package registers under the ``dlx.datasets`` entry-point group.

    Raises DataError (a UserError) for unknown names, bad options or unavailable data.
    """
    if not isinstance(cfg, Mapping):
        raise DataError(f"the data config section must be a mapping, got {type(cfg).__name__}")
    from dlx.config.targets import TARGET, entry_points, import_target, load_entry_point

    if cfg.get(TARGET) is not None:
        from dlx.data.user import load_user_data

        where = f"data._target_={cfg[TARGET]}"
        return load_user_data(import_target(cfg[TARGET], "data._target_"), where, cfg, seed)
    name = cfg.get("name")
    if isinstance(name, str) and name not in DATASETS:
        plugins = entry_points("data")
        if name in plugins:
            from dlx.data.user import load_user_data

            fn = load_entry_point(plugins[name], "data")
            return load_user_data(fn, f"data.name={name} ({plugins[name].value})", cfg, seed)
    if not isinstance(name, str) or name not in DATASETS:
        known = ", ".join(sorted([*DATASETS, *entry_points("data")]))
        hint = suggest(name, DATASETS) if isinstance(name, str) else ""
        raise DataError(
            f"unknown data.name {name!r}; known datasets: {known}.{hint}",
            hint="or your own loader: data._target_=mydata.load (a function in ./mydata.py)",
        )
    return DATASETS[name](cfg, seed)
