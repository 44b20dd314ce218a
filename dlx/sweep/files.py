"""Small file helpers shared by the sweep modules."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def atomic_write(path: Path, text: str) -> None:
    """Temp file + rename: a reader (or another worker writing the same file) never sees half
    a file. The temp name is unique per process and thread."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.write_text(text)
    tmp.replace(path)
