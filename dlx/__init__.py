"""dlx: a command-line experiment runner for deep learning on JAX.

From Python: `dlx.train(recipe, overrides) -> Run` and `dlx.load(run_dir) -> Model` (see
dlx/api.py). Importing dlx imports no jax: the names below load on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Dataset", "Model", "Run", "UserError", "load", "train"]


def __getattr__(name: str) -> Any:
    if name in ("train", "load", "Run", "Model"):
        from dlx import api

        return getattr(api, name)
    if name == "Dataset":
        from dlx.data.dataset import Dataset

        return Dataset
    if name == "UserError":
        from dlx.errors import UserError

        return UserError
    raise AttributeError(f"module 'dlx' has no attribute {name!r}")
