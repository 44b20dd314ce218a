"""The in-memory dataset every loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


# eq=False: comparing numpy arrays with == is elementwise, so a generated __eq__ would raise.
@dataclass(frozen=True, eq=False)
class Dataset:
    """Train/val/test splits as numpy arrays.

    Classification (task "classify"): x (N, *input_shape) float32 or int32 tokens, y (N,)
    int32. Language modelling (task "lm"): x (N, T) int32 tokens, y (N, T) the next tokens.
    Conventions every model and the train step share: token id 0 is padding, and a label
    below 0 is ignored by the loss and the metrics.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    source: str
    task: str = "classify"
    vocab: tuple[str, ...] | None = None  # token id -> text, for datasets of tokens

    def __repr__(self) -> str:
        # The default repr would print the arrays; shapes are what anyone wants to see.
        return (
            f"Dataset(name={self.name!r}, train={len(self.y_train)}, val={len(self.y_val)}, "
            f"test={len(self.y_test)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, source={self.source!r})"
        )
