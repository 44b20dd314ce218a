"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, Zalando Research): 60k/10k 28x28 grey images
of 10 kinds of clothing, in MNIST's IDX layout -> NHWC float32, 5000 validation images.

Sources in order (dlx.data.sources.fashion_mnist_spec): data.path (any folder of the four IDX
files, checked for structure only); the cache ($DLX_CACHE/fashion_mnist); the files of an
installed Debian package /usr/share/datasets/fashion-mnist; the canonical mirrors of the
Zalando files; Debian's dataset-fashion-mnist via `apt-get download` + `dpkg-deb -x` (no
install). Every fetched file is md5-checked (the uncompressed files' md5s).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dlx.data.dataset import Dataset
from dlx.data.mnist import load_idx_images
from dlx.data.sources import fetch_fashion_mnist

# Of the training pixels scaled to [0, 1].
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def load_fashion_mnist(cfg: Mapping[str, Any], seed: int) -> Dataset:
    """Fashion-MNIST from data.path, the cache, the Debian package or a mirror."""
    return load_idx_images(
        "fashion_mnist",
        cfg,
        seed,
        fetch_fashion_mnist,
        (FASHION_MEAN, FASHION_STD),
        FASHION_CLASSES,
    )
