"""A run dir belongs to one process at a time.

The process that trains in a run dir holds an exclusive `flock` on `<run>/.lock` for the whole
session and writes its pid, host and a heartbeat there every `BEAT_S` seconds from a daemon
thread. A second `dlx train resume=<run>` is refused (exit 2) when:
- the lock is held (the same host, or a filesystem whose locks span hosts), or
- the lock file names a live pid on this host (a lock lost on a filesystem without locks), or
- it names another host whose heartbeat is fresher than `STALE_S` (shared storage such as
  NFS, where flock may not reach the other machine).

A SIGKILLed or crashed holder leaves a lock file but no lock: the kernel drops flocks with the
process, and its heartbeat stops, so the run can be resumed at once on the same host and after
`STALE_S` from another one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import threading
import time
from pathlib import Path

from dlx.errors import UserError
from dlx.io import pid_alive

LOCK_NAME = ".lock"
BEAT_S = 20.0
STALE_S = 90.0


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _refuse(run_dir: Path, why: str) -> UserError:
    return UserError(
        f"{run_dir} is in use: {why}",
        hint="a run dir belongs to one process at a time: wait for that run to end or stop "
        "it (kill -TERM <pid> saves a checkpoint), then resume",
    )


class RunLock:
    """Held from `acquire` to `release`; refuses with a UserError naming the holder."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> RunLock:
        holder = _holder(self.path) if self.path.is_file() else {}
        me = platform.node()
        try:  # O_NOFOLLOW: a symlinked lock file could point anywhere
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            raise UserError(
                f"cannot lock {self.path}: {err.strerror}",
                hint="the run dir must be a writable folder of regular files (no symlinks)",
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = holder.get("pid", "?")
            why = f"dlx process {pid} on {holder.get('host', me)} is training in it"
            raise _refuse(self.run_dir, why) from None
        except OSError:
            pass  # a filesystem without flock (some NFS): the heartbeat decides alone
        pid, host = holder.get("pid"), holder.get("host")
        ago = time.time() - float(holder.get("heartbeat") or 0)
        fresh = ago < STALE_S
        if host == me and fresh and isinstance(pid, int) and pid != os.getpid() and pid_alive(pid):
            os.close(fd)
            raise _refuse(self.run_dir, f"process {pid} on this host is training in it")
        if host not in (None, me) and fresh:
            os.close(fd)
            raise _refuse(
                self.run_dir,
                f"process {pid} on host {host} is training in it (heartbeat {ago:.0f}s ago; "
                f"a stopped holder is stale after {STALE_S:.0f}s)",
            )
        self._fd = fd
        self._beat()
        self._thread = threading.Thread(target=self._beats, name="dlx-run-lock", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        if self._fd is None:
            return
        text = json.dumps({"pid": os.getpid(), "host": platform.node(), "heartbeat": time.time()})
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, text.encode(), 0)
        except OSError:
            pass  # a full disk must not end the run; the flock still holds

    def _beats(self) -> None:
        while not self._stop.wait(BEAT_S):
            self._beat()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._fd is not None:
            with contextlib.suppress(OSError):  # no holder: nothing for a later check to weigh
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
