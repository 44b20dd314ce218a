"""The in-memory dataset every loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")


# eq=False: comparing numpy arrays with == is elementwise, so a generated __eq__ would raise.
@dataclass(frozen=True, eq=False)
class Dataset:
    """Train/val/test splits as numpy arrays.

    Classification (task "classify"): x (N, *input_shape) float32 or int32 tokens, y (N,)
    int32. Language modelling (task "lm"): x (N, T) int32 tokens, y (N, T) the next tokens.
    Regression (task "regress"): y (N,) or (N, k) float32; `num_classes` is then the number
    of outputs. Conventions every model and the train step share: token id 0 is padding, and
    a label below 0 is ignored by the loss and the metrics.

    `extra` holds further per-example arrays by name and split, passed to the model with the
    batch: `{"lengths": {"train": (N,), "val": ..., "test": ...}}` for sequences of different
    lengths padded to one (N, T, ...) array (every sequence model then ignores the padding).

    A split's x may instead be a disk-backed array (`dlx.data.mapped.MappedArray`, data=mapped)
    with numpy's `len`, `shape`, `dtype` and indexing (an int, a slice, an index array give a
    numpy array): code that cuts batches by index never reads it whole. Such a dataset sets
    `prefetch`, how many batches the training loop builds ahead in a background thread (0:
    none; the in-memory loaders' batches are a copy of rows in memory, nothing to hide), and
    `read_threads`, how many threads build them.
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
    extra: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    classes: tuple[str, ...] | None = None  # class id -> name, where the data names them
    prefetch: int = 0  # batches built ahead by the loop (dlx/data/prefetch.py)
    read_threads: int = 1  # threads building them (more: more disk reads in flight)
    order_block: int = 0  # > 0: batches in quasi-random order, blocks of this many rows
    order_window: int = 1  # blocks whose rows are shuffled together

    def arrays(self, split: str) -> dict[str, np.ndarray]:
        """{"x", "y", and every `extra` name} of one split: what a batch is cut from."""
        out = {"x": getattr(self, f"x_{split}"), "y": getattr(self, f"y_{split}")}
        return {**out, **{name: by_split[split] for name, by_split in self.extra.items()}}

    def __repr__(self) -> str:
        # The default repr would print the arrays; shapes are what anyone wants to see.
        return (
            f"Dataset(name={self.name!r}, train={len(self.y_train)}, val={len(self.y_val)}, "
            f"test={len(self.y_test)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, source={self.source!r})"
        )
