"""MNIST as sequences: each image is 28 time steps of 28 pixels (a row per step)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from dlx.data.dataset import Dataset
from dlx.data.mnist import load_mnist


def load_mnist_rows(cfg: Mapping[str, Any], seed: int) -> Dataset:
    """The MNIST loader (same sources, split and normalisation), reshaped to (N, 28, 28)."""
    images = load_mnist(cfg, seed)
    h, w = images.input_shape[:2]

    def rows(x: Any) -> Any:
        return x.reshape(len(x), h, w)  # a view: drops the channel axis, no copy

    return dataclasses.replace(
        images,
        name="mnist_rows",
        x_train=rows(images.x_train),
        x_val=rows(images.x_val),
        x_test=rows(images.x_test),
        input_shape=(h, w),
    )
