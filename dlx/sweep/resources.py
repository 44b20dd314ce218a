"""A fair share of the machine for each of --jobs N trials running at once.

CPU: the cores this process may use are split into N disjoint sets and each trial is pinned to
its set (sched_setaffinity, inherited through exec). XLA sizes its CPU thread pools from the
affinity mask, so N trials do not each start a pool as big as the machine and thrash;
OMP/BLAS pools get the same count. More jobs than cores: jobs share cores round-robin.

GPU: the visible GPUs (CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`) are split the same way
through CUDA_VISIBLE_DEVICES; jobs sharing one GPU get an equal slice of its memory
(XLA_PYTHON_CLIENT_MEM_FRACTION) instead of the first one preallocating 75% of it.

With --jobs 1 nothing is pinned or hidden: the trial gets what `dlx train` would get.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# exec keeps the affinity mask; the trial is still plain `python -m dlx train ...`.
_PIN = "import os, sys; os.sched_setaffinity(0, {%s}); os.execv(sys.executable, sys.argv[1:])"


@dataclass(frozen=True)
class Slot:
    """What one concurrently running trial may use."""

    index: int
    cpus: tuple[int, ...] | None = None  # None: not pinned
    gpus: tuple[str, ...] | None = None  # None: GPUs untouched
    gpu_share: int = 1  # trials sharing each of these GPUs

    def command(self, argv: list[str]) -> list[str]:
        """argv (starting with sys.executable) run on this slot's cores."""
        if not self.cpus:
            return argv
        pin = _PIN % ", ".join(map(str, self.cpus))
        return [sys.executable, "-c", pin, *argv]

    def env(self, base: dict[str, str]) -> dict[str, str]:
        env = dict(base)
        if self.cpus:
            env.update({k: str(len(self.cpus)) for k in THREAD_VARS})
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
            if self.gpu_share > 1:
                env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 / self.gpu_share:.2f}"
        return env

    def describe(self) -> str:
        parts = []
        if self.cpus:
            parts.append(f"cpus {_ranges(self.cpus)}")
        if self.gpus is not None:
            share = f" (1/{self.gpu_share} each)" if self.gpu_share > 1 else ""
            parts.append(f"gpu {','.join(self.gpus)}{share}")
        return ", ".join(parts) or "whole machine"


def visible_gpus() -> list[str]:
    """GPU ids this process may use, without importing jax (which would claim them)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def make_slots(
    jobs: int, cpus: list[int] | None = None, gpus: list[str] | None = None
) -> list[Slot]:
    """One slot per job; cpus/gpus default to what this process may use."""
    if jobs <= 1:
        return [Slot(0)]
    cpus = sorted(os.sched_getaffinity(0)) if cpus is None else cpus
    gpus = visible_gpus() if gpus is None else gpus
    slots = []
    for i in range(jobs):
        cores = _share(cpus, jobs, i)
        if gpus:
            mine = _share(gpus, jobs, i)
            share = -(-jobs // len(gpus)) if jobs > len(gpus) else 1
            slots.append(Slot(i, tuple(cores), tuple(mine), share))
        else:
            slots.append(Slot(i, tuple(cores)))
    return slots


def _share(items: list, n: int, i: int) -> list:
    """The i-th of n near-equal contiguous chunks; one item round-robin when n > len(items)."""
    if n > len(items):
        return [items[i % len(items)]]
    base, extra = divmod(len(items), n)
    start = i * base + min(i, extra)
    return items[start : start + base + (i < extra)]


def _ranges(cpus: tuple[int, ...]) -> str:
    if len(cpus) > 1 and cpus[-1] - cpus[0] == len(cpus) - 1:
        return f"{cpus[0]}-{cpus[-1]}"
    return ",".join(map(str, cpus))
