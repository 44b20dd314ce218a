"""dlx's side of the benchmarks: the set-up every in-process contender starts from, the timed
step loop, and the environment of the child processes they launch.

The set-up is `dlx.setup.build(cfg)` of the composed recipe, the one `dlx train`, restoring a
run and the Python API use: a benchmark measures what users run, not a copy wired by hand
that can drift from it (data, task and model, optimizer, schedule, strategy, runtime).

Nothing here imports dlx or JAX at module level: vs_pytorch.py's PyTorch workers import this
file's siblings in an interpreter that has neither.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def dlx_setup(recipe: str, overrides: Sequence[str] = (), **build: Any) -> Any:
    """`build(compose([recipe=..., *overrides]))`: a `dlx.setup.Setup`, as `dlx train` gets it.

    `build` goes to `dlx.setup.build` (schedule_steps, strategy, runtime). With the default
    runtime=True this configures JAX's devices and XLA flags, so call it before any other JAX
    computation in the process, as `dlx train` does.
    """
    from dlx.config import compose
    from dlx.setup import build as build_setup

    return build_setup(compose([f"recipe={recipe}", *overrides]), **build)


def train_batch(setup: Any, idx: Any) -> dict:
    """The host batch of training rows `idx`, cut as a standard run's Phase cuts it: x, y and
    the dataset's extra arrays (`lengths`), through the task's `host_batch`."""
    rows = {k: v[idx] for k, v in setup.data.arrays("train").items()}
    return setup.task.host_batch(rows)


def run_steps(setup: Any, state: Any, batches: Iterable[Any]) -> Any:
    """Train `state` (placed by `setup.strategy`) on `batches` (each as `strategy.batch`
    returns it) with the loop's bound on steps in flight: block on a step's loss once it is
    trainer.sync_every steps old (fake CPU devices abort in an all-reduce rendezvous without
    it: docs/architecture.md), and on the params at the end. Returns the new state."""
    import jax

    task, strategy = setup.task, setup.strategy
    sync_every = int(setup.cfg.trainer.sync_every)
    in_flight: deque = deque()
    for batch in batches:
        state, m = strategy.train_step(task, state, batch)
        in_flight.append(m["loss"])
        if len(in_flight) > sync_every:
            jax.block_until_ready(in_flight.popleft())
    jax.block_until_ready(state.params)
    return state


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a benchmark's child process: CPU JAX, this checkout importable."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def timed(argv: list[str], cache: Path) -> float:
    """Wall seconds of a child process (stdout dropped) with $DLX_CACHE at `cache`."""
    import subprocess
    import time

    env = child_env(DLX_CACHE=str(cache))
    t = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - t
