"""Small file and process helpers shared across dlx: one copy of each.

Standard library only (no jax, no numpy import): `dlx runs` and the sweep driver use these and
must start instantly.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import threading
from pathlib import Path
from typing import Any


def atomic_write(path: Path, data: str | bytes, mode: int | None = None) -> None:
    """Write `data` to `path` so that a reader never sees half a file.

    The data goes to a temp file in the same folder, `.{name}.{pid}.{thread}.tmp` (unique per
    process and thread, so two workers writing the same file never share one), which then
    replaces `path` with `os.replace` (atomic on POSIX and Windows). A `str` is written as
    UTF-8. `mode` sets the file's permission bits (e.g. 0o644); None leaves the default that
    `open` gives (0o666 less the umask). The parent folder must exist. If anything fails
    (including KeyboardInterrupt) the temp file is removed, `path` is left as it was, and the
    error propagates. No fsync: this protects against torn reads and interrupted writers, not
    against power loss.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # keep the original error, not a cleanup one
            tmp.unlink(missing_ok=True)
        raise


def json_clean(value: Any) -> Any:
    """`value` made safe for strict JSON: NaN/inf become the strings "nan"/"inf"/"-inf".

    Recurses into dicts (keys kept as they are), lists and tuples (tuples become lists).
    numpy scalars become Python scalars (`.item()`) and numpy arrays nested lists, then are
    cleaned like the rest; numpy is never imported here (if it is not loaded, no numpy value
    can exist). Anything else is returned unchanged, for `json.dumps` to accept or reject.
    """
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.generic | np.ndarray):
        # np.float64 subclasses float, so convert before the float check below.
        value = value.tolist() if isinstance(value, np.ndarray) else value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # "nan", "inf", "-inf"
    if isinstance(value, dict):
        return {k: json_clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_clean(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    """`data` as indented strict JSON (see `json_clean`), written with `atomic_write`."""
    atomic_write(path, json.dumps(json_clean(data), indent=2) + "\n")


def pid_alive(pid: Any) -> bool:
    """Whether process `pid` is running on this machine.

    False when it is gone: no such process, or a zombie (exited, waiting for its parent to
    reap it; read from /proc on Linux). True for another user's process (PermissionError).
    False for anything that is not a positive int (0, negatives, bools, None, strings, floats):
    0 and -1 would make `os.kill` signal a whole process group, and a malformed value names no
    process. A caller that must not act on a malformed record (rather than treat it as a dead
    process) checks the value itself first.
    """
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    except (OSError, OverflowError):  # e.g. a pid too large for the platform's pid_t
        return False
    try:  # Linux: a zombie has exited and only waits for its parent to reap it
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:  # exited since os.kill, unless there is no /proc at all (macOS)
        return not Path("/proc/self/stat").exists()
    except (OSError, IndexError):
        return True  # unreadable: os.kill said it exists
