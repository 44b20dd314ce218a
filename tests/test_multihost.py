"""Multi-host training on JAX's distributed runtime: `dlx launch` starts 2 processes on
127.0.0.1 (2 fake CPU devices each, CPU collectives over gloo). The final params equal a
single-process run on the same global batch, and only process 0 writes a run dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from parallel_worker import _restore  # tests/ is on sys.path under pytest

TINY = [
    "recipe=digits",
    "trainer.max_steps=12",
    "data.batch_size=64",
    "model.dropout=0.0",
    "trainer.log_every=1",
    "trainer.progress=plain",
]


def _runs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "digits").iterdir() if p.is_dir())


def test_two_processes_match_one(cli, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dlx",
            "launch",
            "--nproc",
            "2",
            "--",
            "train",
            *TINY,
            "parallel=sharded",
            "parallel.cpu_devices=2",
            f"outputs.dir={tmp_path / 'multi'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "over 4 devices in 2 processes" in proc.stdout
    multi = _runs(tmp_path / "multi")
    assert len(multi) == 1, "only process 0 writes a run dir"

    result = cli("train", *TINY, "parallel=single", f"outputs.dir={tmp_path / 'one'}")
    assert result.exit_code == 0, result.output
    (one,) = _runs(tmp_path / "one")

    import jax

    a = jax.tree_util.tree_leaves(_restore(multi[0]).params)
    b = jax.tree_util.tree_leaves(_restore(one).params)
    diff = max(
        float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(a, b, strict=True)
    )
    assert diff < 1e-5, f"max abs param difference {diff}"


def test_launch_rejects_what_it_sets_itself() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dlx", "launch", "--nproc", "2", "--", "train", "dist.process_id=1"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2 and "dist.*" in proc.stderr and "Traceback" not in proc.stderr
