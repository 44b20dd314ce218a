"""Atomic writes into the dlx cache, so an interrupted run never leaves a half-written file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dlx.errors import DataError


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
        ) as tmp:
            tmp_name = tmp.name
            tmp.write(data)
        # NamedTemporaryFile creates 0600; a cache may be shared (DLX_CACHE), so 0644.
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as err:
        raise DataError(
            f"cannot write the dataset cache file {path}: {err.strerror or err}",
            hint="set DLX_CACHE (or data.cache_dir) to a writable folder",
        ) from err
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
