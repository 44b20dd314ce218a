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


def open_append(path: Path) -> Any:
    """`path` opened for appending text, refusing to follow a symlink (O_NOFOLLOW): a run's
    logs are written inside its run dir, never through a link to somewhere else."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        if Path(path).is_symlink():
            from dlx.errors import UserError

            raise UserError(
                f"{path} is a symlink; dlx writes only regular files inside a run dir",
                hint="replace the link with a regular file (or remove it)",
            ) from err
        raise
    return os.fdopen(fd, "a", encoding="utf-8")


def output_file(path: Path, option: str) -> Path:
    """A file the user asked a command to write (`--out`): its folder made, or a UserError
    naming the option and why it cannot be written there."""
    from dlx.errors import UserError

    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(
            f"{option} {path} is a folder", hint=f"give a file name: {option} {path / 'out.png'}"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"{option} {path}: cannot create the folder {path.parent}: {err.strerror}",
            hint=f"choose a path in a writable folder, e.g. {option} ./{path.name}",
        ) from err
    if not os.access(path.parent, os.W_OK):
        raise UserError(
            f"{option} {path}: {path.parent} is not writable", hint="choose another path"
        )
    return path


PARENT_ENV = "DLX_PARENT_PID"  # set by a sweep worker for its trials


def die_with_parent() -> None:
    """In a sweep trial (a `dlx train` whose worker set DLX_PARENT_PID): ask Linux to send
    SIGTERM when the worker dies, even by SIGKILL (PR_SET_PDEATHSIG), and exit at once if it
    already has. SIGTERM makes the trial checkpoint and stop instead of training on as an
    orphan while its point is run again. Set here, in the child, rather than in a
    `preexec_fn`, which is unsafe in a threaded parent."""
    parent = os.environ.pop(PARENT_ENV, None)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1: PDEATHSIG
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != parent:  # the worker died before the prctl took effect
        os._exit(128 + int(signal.SIGTERM))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The dict records of a JSONL file; lines that do not parse (a torn last line of a
    writer still running or killed, undecodable bytes) are skipped; a missing file is []."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out
