"""`dlx launch`: start a multi-process run on this machine, one `dlx train` per process,
joined through JAX's distributed runtime (the same path as a multi-host cluster)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from dlx.errors import UserError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(nproc: int, args: Sequence[str], port: int | None = None) -> int:
    """Run `dlx <args> dist.*=...` in `nproc` processes; returns the first non-zero exit code.

    If one process fails the others are stopped: a collective would wait for it forever.
    """
    if nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {nproc}", hint="e.g. --nproc 2")
    if not args or args[0] != "train":
        raise UserError(
            "dlx launch runs a training command", hint="dlx launch --nproc 2 -- train recipe=digits"
        )
    if any(a.startswith("dist.") for a in args):
        raise UserError("dlx launch sets dist.* itself", hint="remove the dist.* overrides")
    address = f"127.0.0.1:{port or free_port()}"
    procs = []
    for rank in range(nproc):
        cmd = [
            sys.executable,
            "-m",
            "dlx",
            *args,
            f"dist.coordinator={address}",
            f"dist.num_processes={nproc}",
            f"dist.process_id={rank}",
        ]
        # Only process 0 prints (and writes the run dir); the others keep their errors.
        out = None if rank == 0 else subprocess.DEVNULL
        procs.append(subprocess.Popen(cmd, stdout=out, stdin=subprocess.DEVNULL))
    code = 0
    try:
        while procs and code == 0:
            for p in list(procs):
                rc = p.poll()
                if rc is not None:
                    procs.remove(p)
                    code = code or rc
            time.sleep(0.2)
    finally:
        for p in procs:  # stop the rest after a failure (or Ctrl-C)
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    return code
