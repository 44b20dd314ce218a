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
