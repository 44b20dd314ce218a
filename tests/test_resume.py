"""Runs that survive faults: preemption + exact resume, divergence, early stopping,
fine-tuning from another run, corrupt and half-written checkpoints, and no unpickling."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from dlx.track.metrics import read_metrics

BASE = ["recipe=digits", "data.batch_size=32", "trainer.progress=plain", "trainer.log_every=1"]


def _run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "digits").iterdir() if p.is_dir())


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _params(run: Path) -> list[np.ndarray]:
    """The latest checkpoint's params and model state (BatchNorm statistics), as arrays."""
    from dlx.restore import load_run

    state = load_run(run, kind="latest").state
    return [np.asarray(p) for p in jax.tree_util.tree_leaves((state.params, state.model_state))]


def _train_losses(run: Path) -> list[tuple[int, float]]:
    return [
        (r["step"], r["train/loss"])
        for r in read_metrics(run / "metrics.jsonl")
        if "train/loss" in r
    ]


def test_sigterm_checkpoints_and_resume_is_exact(cli, tmp_path: Path, cache_dir: Path) -> None:
    # 800 steps: long enough to be interrupted. One device in both processes: exactness is
    # about resuming; across device counts XLA may sum in another order (float rounding).
    # BatchNorm: the running statistics (model state, not params) must survive it too.
    args = [*BASE, "trainer.epochs=20", "parallel=single", "model.norm=batch"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlx", "train", *args, f"outputs.dir={tmp_path / 'cut'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "DLX_CACHE": str(cache_dir)},
    )
    deadline = time.time() + 120
    metrics = None
    while time.time() < deadline:
        runs = list((tmp_path / "cut").glob("digits/*/metrics.jsonl"))
        if runs and runs[0].read_text().count("train/loss") >= 20:
            metrics = runs[0]
            break
        time.sleep(0.05)
    assert metrics is not None, "training never started"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    run = metrics.parent
    summary = _summary(run)
    assert summary["status"] == "preempted" and 20 <= summary["steps"] < 800
    assert f"dlx train resume={run}" in out

    resumed = cli("train", f"resume={run}")
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming from step {summary['steps']}" in resumed.output
    assert _summary(run)["status"] == "finished" and _summary(run)["steps"] == 800
    assert _run_dirs(tmp_path / "cut") == [run], "resume continues in the same run dir"

    whole = cli("train", *args, f"outputs.dir={tmp_path / 'whole'}")
    assert whole.exit_code == 0, whole.output
    (ref,) = _run_dirs(tmp_path / "whole")
    # 10 params (2 conv kernels, 2 BatchNorms' scale and bias, 2 dense kernels and biases)
    # and 4 running statistics (2 BatchNorms' mean and var)
    assert len(_params(ref)) == 14
    for a, b in zip(_params(run), _params(ref), strict=True):
        np.testing.assert_array_equal(a, b)  # bit-identical
    # Same per-step losses, each step logged exactly once across the interruption.
    got, want = np.array(_train_losses(run)), np.array(_train_losses(ref))
    assert list(got[:, 0]) == list(range(1, 801))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(cli, tmp_path: Path) -> None:
    first = cli("train", *BASE, "trainer.epochs=2", f"outputs.dir={tmp_path}")
    assert first.exit_code == 0, first.output
    (run,) = _run_dirs(tmp_path)
    good = _params(run)
    blowup = cli("train", f"resume={run}", "trainer.epochs=4", "optim.lr=1e12")
    assert blowup.exit_code == 3, blowup.output
    summary = _summary(run)
    assert summary["status"] == "diverged" and summary["diverged_step"] > 80
    assert summary["diverged_reason"].startswith("train ")
    assert f"at step {summary['diverged_step']}" in " ".join(blowup.output.split())
    for a, b in zip(_params(run), good, strict=True):  # latest is still the good one
        np.testing.assert_array_equal(a, b)


def test_early_stopping(cli, tmp_path: Path) -> None:
    # Watching accuracy with mode=min: the second eval's (higher) accuracy is no improvement.
    result = cli(
        "train",
        *BASE,
        "trainer.epochs=10",
        "trainer.early_stopping.patience=1",
        "trainer.early_stopping.metric=val/accuracy",
        "trainer.early_stopping.mode=min",
        f"outputs.dir={tmp_path}",
    )
    assert result.exit_code == 0, result.output
    summary = _summary(_run_dirs(tmp_path)[0])
    assert summary["early_stopped"] is True and summary["epochs"] == 2
    assert "test/accuracy" in summary["test"]


def test_init_from_another_run_and_shape_mismatch(cli, tmp_path: Path) -> None:
    assert cli("train", *BASE, "trainer.epochs=2", f"outputs.dir={tmp_path / 'a'}").exit_code == 0
    (source,) = _run_dirs(tmp_path / "a")
    tuned = cli(
        "train",
        *BASE,
        "trainer.max_steps=3",
        "optim=sgd",
        "optim.lr=1e-30",
        "optim.momentum=0.0",
        "model.dropout=0.0",
        f"init_from={source}",
        f"outputs.dir={tmp_path / 'b'}",
    )
    assert tuned.exit_code == 0, tuned.output
    (target,) = _run_dirs(tmp_path / "b")
    best = [np.asarray(p) for p in jax.tree_util.tree_leaves(_restore_best(source))]
    for a, b in zip(_params(target), best, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    bad = cli(
        "train", *BASE, "model.dense=32", f"init_from={source}", f"outputs.dir={tmp_path / 'c'}"
    )
    assert bad.exit_code == 2
    # The first differing parameter, with both shapes.
    assert re.search(r"Dense_0.*bias.*\(64,\).*this model has \(32,\)", bad.output, re.S), (
        bad.output
    )


def _restore_best(run: Path):
    from dlx.restore import load_run

    return load_run(run, kind="best").state.params


def _corrupt(step_dir: Path) -> None:
    for f in step_dir.rglob("*"):
        if f.is_file() and "state" in f.parts and f.stat().st_size > 0:
            f.write_bytes(b"\0" * 7)


def test_corrupt_checkpoint_falls_back_then_names_the_file(cli, tmp_path: Path) -> None:
    from dlx.checkpoint import RunCheckpoints
    from dlx.errors import UserError
    from dlx.restore import load_run

    assert cli("train", *BASE, "trainer.epochs=2", f"outputs.dir={tmp_path}").exit_code == 0
    (run,) = _run_dirs(tmp_path)
    steps = RunCheckpoints(run / "checkpoints", create=False).steps("latest")
    assert len(steps) == 2
    _corrupt(run / "checkpoints" / "latest" / str(max(steps)))
    assert load_run(run, kind="latest").step == min(steps)  # the previous good step
    _corrupt(run / "checkpoints" / "latest" / str(min(steps)))
    with pytest.raises(UserError, match=r"checkpoints/latest/\d+"):
        load_run(run, kind="latest")
    result = cli("train", f"resume={run}", "trainer.epochs=3")  # more to train: it must read
    assert result.exit_code == 2 and "cannot read checkpoint" in result.output


KILLER = """
import sys, jax, jax.numpy as jnp, optax
from dlx.checkpoint import RunCheckpoints
from dlx.training.step import TrainState
params = {"w": jnp.ones((1024, 2048))}  # 8 MB per save
state = TrainState.create(None, params, optax.sgd(0.1), jax.random.PRNGKey(0))
ckpt = RunCheckpoints(sys.argv[1])
for step in range(1, 10_000):
    state = state.replace(step=jnp.asarray(step), params={"w": params["w"] * step})
    ckpt.save(state, {"step": step})
    print(step, flush=True)
"""


def test_sigkill_while_writing_leaves_a_restorable_checkpoint(tmp_path: Path) -> None:
    import jax.numpy as jnp
    import optax

    from dlx.checkpoint import RunCheckpoints
    from dlx.training.step import TrainState

    proc = subprocess.Popen(
        [sys.executable, "-c", KILLER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    for _ in range(3):  # let a few saves start, then kill mid-stream
        assert proc.stdout.readline()
    time.sleep(0.05)
    proc.kill()
    proc.wait()
    template = TrainState.create(
        None, {"w": jnp.zeros((1024, 2048))}, optax.sgd(0.1), jax.random.PRNGKey(0)
    )
    state, meta = RunCheckpoints(tmp_path, create=False).restore(template, "latest")
    step = int(state.step)
    assert step >= 1 and meta["step"] == step
    assert float(state.params["w"][0, 0]) == step  # the values of that very step


def test_stop_request_sets_the_flag_on_sigint() -> None:
    from dlx.training.signals import StopRequest

    with StopRequest() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert stop() and stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)


def test_nothing_is_ever_unpickled() -> None:
    root = Path(__file__).parent.parent / "dlx"
    pattern = re.compile(
        r"import pickle|cloudpickle|allow_pickle\s*=\s*True|yaml\.load\(|"
        r"yaml\.unsafe_load|torch\.load|dill"
    )
    offenders = [
        f"{f}: {m.group(0)}" for f in root.rglob("*.py") for m in pattern.finditer(f.read_text())
    ]
    assert offenders == []
