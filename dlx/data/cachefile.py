"""Atomic writes into the dlx cache, so an interrupted run never leaves a half-written file."""

from __future__ import annotations

from pathlib import Path

from dlx.errors import DataError
from dlx.io import atomic_write


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with `dlx.io.atomic_write` (temp file in the same folder, then
    ``os.replace``), creating the folder; a failure is a `DataError` that names the cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A cache may be shared (DLX_CACHE): readable by all, whatever the umask.
        atomic_write(path, data, mode=0o644)
    except OSError as err:
        raise DataError(
            f"cannot write the dataset cache file {path}: {err.strerror or err}",
            hint="set DLX_CACHE (or data.cache_dir) to a writable folder",
        ) from err
