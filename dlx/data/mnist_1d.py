"""MNIST-1D (Greydanus & Kobak): 4000/1000 sequences of 40 steps -> (N, 40, 1) float32.

Generated with the PyPI ``mnist1d`` package and cached as an .npz (generation takes ~4 s;
loading the cache ~10 ms and doesn't even import mnist1d, which pulls in scipy).
"""

from __future__ import annotations

import io
import logging
import random
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dlx.data.cachefile import write_atomic
from dlx.data.config import cache_dir
from dlx.data.dataset import Dataset
from dlx.data.splits import build_dataset
from dlx.errors import DataError

log = logging.getLogger(__name__)

SEQ_LEN = 40
SHAPES = {"x": (4000, SEQ_LEN), "y": (4000,), "x_test": (1000, SEQ_LEN), "y_test": (1000,)}


def _generate() -> dict[str, np.ndarray]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:
        raise DataError(
            "the mnist1d dataset needs the mnist1d package, which is not installed",
            hint="pip install mnist1d",
        ) from err
    # make_dataset() seeds the global `random` and `np.random` generators (seed 42); restore
    # them so loading data doesn't silently change anyone else's random stream. We never call
    # get_dataset(): it first tries a GitHub download with no timeout.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        raw = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {key: np.asarray(raw[key]) for key in SHAPES}


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None if the file is absent or not what we wrote."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in SHAPES}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        log.warning("ignoring unreadable mnist1d cache %s (%s); regenerating", path, err)
        return None
    if any(arrays[key].shape != shape for key, shape in SHAPES.items()):
        log.warning("ignoring mnist1d cache %s with unexpected shapes; regenerating", path)
        return None
    return arrays


def load_mnist1d(cfg: Mapping[str, Any], seed: int) -> Dataset:
    """MNIST-1D with the package's default generation arguments; val carved out by ``seed``."""
    path = cache_dir(cfg) / "mnist1d" / "mnist1d_default.npz"
    arrays = _read_cache(path)
    if arrays is not None:
        source = f"cache {path}"
    else:
        log.info("generating MNIST-1D with mnist1d.make_dataset (a few seconds, once)")
        arrays = _generate()
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_atomic(path, buffer.getvalue())
        source = f"mnist1d make_dataset() (saved to cache {path})"
    return build_dataset(
        "mnist1d",
        cfg,
        seed,
        train=(arrays["x"][..., None], arrays["y"]),
        test=(arrays["x_test"][..., None], arrays["y_test"]),
        val_default=0.1,
        num_classes=10,
        scale=1.0,
        source=source,
    )
