"""Data parallelism with 8 fake CPU devices (in a subprocess: the device count is fixed when
JAX starts): single, pmap and sharded give the same numbers for the same global batch; eval
counts every example once; a checkpoint from 8-device pmap restores on 1 device; a batch that
cannot be split is a clear error before compiling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

STEPS = 24
EIGHT = {
    **os.environ,
    "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
    "JAX_PLATFORMS": "cpu",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("parallel")
    worker = Path(__file__).parent / "parallel_worker.py"
    proc = subprocess.run(
        [sys.executable, str(worker), str(out), str(STEPS), "pmap,sharded,single"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**EIGHT, "DLX_CACHE": str(cache_dir)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _report(runs: Path) -> dict:
    return json.loads((runs / "report.json").read_text())


def _params(run_dir: str) -> list[np.ndarray]:
    import jax

    from dlx.restore import load_run

    params = load_run(run_dir, kind="latest").state.params
    return [np.asarray(p) for p in jax.tree_util.tree_leaves(params)]


def test_same_loss_curve_for_every_strategy(runs: Path) -> None:
    report = _report(runs)
    single = np.array(report["single"]["losses"])
    assert len(single) == STEPS and single[-1] < single[0]
    for name in ("pmap", "sharded"):
        np.testing.assert_allclose(report[name]["losses"], single, rtol=1e-5, atol=1e-6)


def test_same_final_params_for_every_strategy(runs: Path) -> None:
    """Restored on this 1-device process: 8-device checkpoints load anywhere."""
    report = _report(runs)
    single = _params(report["single"]["run_dir"])
    for name in ("pmap", "sharded"):
        other = _params(report[name]["run_dir"])
        diff = max(float(np.abs(a - b).max()) for a, b in zip(single, other, strict=True))
        assert diff < 1e-5, f"{name}: max abs param difference {diff}"
    # Different runs really differ: the comparison above is not vacuous.
    assert max(float(np.abs(p).max()) for p in single) > 0.01


@pytest.mark.parametrize("strategy", ["replay", "ewc"])
def test_continual_runs_give_the_same_numbers_on_8_devices(runs: Path, strategy: str) -> None:
    report = json.loads((runs / "continual.json").read_text())
    single = report[f"{strategy}/single"]
    assert len(single["losses"]) == 15 and np.asarray(single["R"]).shape == (3, 3)
    for name in ("pmap", "sharded"):
        other = report[f"{strategy}/{name}"]
        assert "8" in other["parallel"], other["parallel"]  # really ran on 8 devices
        np.testing.assert_allclose(other["losses"], single["losses"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(other["R"], single["R"], atol=0.02)


def test_batchnorm_statistics_on_8_devices(runs: Path) -> None:
    """sharded: the global batch's statistics, so the same losses and running averages as
    one device; pmap: per-device statistics (a different normalisation, so only close),
    averaged over the devices after each step."""
    report = json.loads((runs / "norm.json").read_text())
    single = report["single"]
    assert len(single["losses"]) == 12 and len(single["stats"]) == 4  # 2 BatchNorms x mean, var
    for name in ("sharded", "pmap"):
        assert "8" in report[name]["parallel"], report[name]["parallel"]
    sharded = report["sharded"]
    np.testing.assert_allclose(sharded["losses"], single["losses"], rtol=1e-5, atol=1e-6)
    for a, b in zip(sharded["stats"], single["stats"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    pmap = report["pmap"]
    assert pmap["losses"][-1] < pmap["losses"][0]
    np.testing.assert_allclose(pmap["losses"][0], single["losses"][0], rtol=1e-2)
    for a, b in zip(pmap["stats"], single["stats"], strict=True):  # means ~equal; vars close
        np.testing.assert_allclose(a, b, rtol=0.1, atol=0.05)


def test_eval_counts_every_example_once_on_any_device_count(runs: Path) -> None:
    counts = json.loads((runs / "counts.json").read_text())
    assert len(counts) == 12 and set(counts.values()) == {29}


def test_batch_not_divisible_by_devices_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dlx",
            "train",
            "recipe=digits",
            "parallel=sharded",
            "data.batch_size=60",
            f"outputs.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=EIGHT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "data.batch_size=60 cannot be split evenly over 8 devices" in proc.stderr
    assert "data.batch_size=64" in proc.stderr
    assert not any(tmp_path.iterdir()), "nothing is written before the check"


def test_eval_batch_size_fits_small_splits_and_splits_evenly() -> None:
    from dlx.training.parallel import Strategy

    one, eight = Strategy(["cpu:0"]), Strategy([f"cpu:{i}" for i in range(8)])
    assert one.eval_batch_size(1000, 5000) == 1000  # large split: the configured batch
    assert one.eval_batch_size(1000, 100) == 100  # small split: one batch, no padding
    assert eight.eval_batch_size(1000, 100) == 104  # ...rounded up to split over 8
    assert eight.eval_batch_size(1000, 5000) == 1000
    assert eight.eval_batch_size(10, 5000) == 16
    assert one.eval_batch_size(1000, 0) == 1  # empty split: still a valid batch size
