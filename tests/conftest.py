"""Shared test set-up: a private cache and outputs folder, so tests never touch ~/.cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before jax starts anywhere in the test process: plain output, no GPU probing.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dlx-cache")
    os.environ["DLX_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def cli(cache_dir: Path):
    """Invoke the real `dlx` Typer app in-process (compiled steps are reused across calls)."""
    from typer.testing import CliRunner

    from dlx.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    return invoke


@pytest.fixture()
def sigterm_after():
    """`with sigterm_after(n): ...` runs the block as if SIGTERM arrived after the n-th
    training step: the loop's stop check says "stop" from its (n+1)-th call on (in-process
    and deterministic, unlike a real signal's timing)."""
    import contextlib
    import signal

    from dlx.training.signals import StopRequest

    @contextlib.contextmanager
    def patch(steps: int):
        calls = {"n": 0}
        original = StopRequest.__call__

        def stop(self: StopRequest) -> bool:
            calls["n"] += 1
            if calls["n"] > steps:
                self.signum = signal.SIGTERM
            return self.signum is not None

        StopRequest.__call__ = stop
        try:
            yield
        finally:
            StopRequest.__call__ = original

    return patch
