"""Checkpoints by steps and by time, the keep policy, evals every N steps, and exact resume
after `kill -9` at any moment (mid-epoch included)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from dlx.track.metrics import read_metrics

# digits: 1294 train examples, batch 32 -> 40 steps an epoch.
BASE = ["recipe=digits", "data.batch_size=32", "trainer.progress=plain", "parallel=single"]
PER_EPOCH = 40


def _run(root: Path) -> Path:
    (run,) = [p for p in (root / "digits").iterdir() if p.is_dir()]
    return run


def _steps(run: Path, kind: str) -> list[int]:
    folder = run / "checkpoints" / kind
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def _params(run: Path) -> list[np.ndarray]:
    from dlx.restore import load_run

    state = load_run(run, kind="latest").state
    return [np.asarray(p) for p in jax.tree_util.tree_leaves((state.params, state.opt_state))]


def test_checkpoints_every_n_steps_mid_epoch_with_the_keep_policy(cli, tmp_path: Path) -> None:
    out = cli(
        "train",
        *BASE,
        "trainer.epochs=2",
        "trainer.checkpoint_every_steps=7",
        "trainer.keep_checkpoints=3",
        f"outputs.dir={tmp_path}",
    )
    assert out.exit_code == 0, out.output
    run = _run(tmp_path)
    # 7, 14, ... 77 mid-epoch, 40 and 80 at the epoch ends; the three newest are kept.
    assert _steps(run, "latest") == [70, 77, 80]
    from dlx.checkpoint import RunCheckpoints

    ckpt = RunCheckpoints(run / "checkpoints", create=False)
    meta = ckpt.restore(_template(run), "latest", 77)[1]
    assert meta["step"] == 77 and meta["epoch"] == 2  # saved inside epoch 2


def _template(run: Path):
    from dlx.restore import load_run

    return load_run(run, kind="latest").state


def test_checkpoints_by_wall_clock(cli, tmp_path: Path) -> None:
    # 0.0005 minutes = 30 ms: every few steps of this small model.
    out = cli(
        "train",
        *BASE,
        "trainer.epochs=1",
        "trainer.checkpoint_every_minutes=0.0005",
        "trainer.keep_checkpoints=50",
        f"outputs.dir={tmp_path}",
    )
    assert out.exit_code == 0, out.output
    steps = _steps(_run(tmp_path), "latest")
    assert steps[-1] == PER_EPOCH and len(steps) >= 3, steps  # mid-epoch saves happened


def test_no_time_checkpoint_when_switched_off(cli, tmp_path: Path) -> None:
    out = cli(
        "train",
        *BASE,
        "trainer.epochs=1",
        "trainer.checkpoint_every_minutes=null",
        "trainer.keep_checkpoints=50",
        f"outputs.dir={tmp_path}",
    )
    assert out.exit_code == 0, out.output
    assert _steps(_run(tmp_path), "latest") == [PER_EPOCH]


def test_evals_every_n_steps_pick_a_mid_epoch_best(cli, tmp_path: Path) -> None:
    out = cli(
        "train",
        *BASE,
        "trainer.epochs=1",
        "trainer.eval_every_steps=15",
        f"outputs.dir={tmp_path}",
    )
    assert out.exit_code == 0, out.output
    run = _run(tmp_path)
    evals = [r for r in read_metrics(run / "metrics.jsonl") if "val/loss" in r]
    assert [r["step"] for r in evals] == [15, 30, PER_EPOCH]
    assert "(step 15)" in out.output  # shown on the console, not only in train.log
    # the best is the first eval with the highest val accuracy, mid-epoch ones included
    best = max(evals, key=lambda r: (r["val/accuracy"], -r["step"]))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best"]["step"] == best["step"]
    assert summary["best"]["val/accuracy"] == best["val/accuracy"]
    assert _steps(run, "best") == [best["step"]]


def test_early_stopping_counts_mid_epoch_evals(cli, tmp_path: Path) -> None:
    # lr 1e-9: val accuracy stays at its first value, so with patience 1 the second eval
    # (step 10, inside epoch 1) is no improvement and stops the run there.
    out = cli(
        "train",
        *BASE,
        "trainer.epochs=3",
        "optim.lr=1e-9",
        "trainer.eval_every_steps=5",
        "trainer.early_stopping.patience=1",
        f"outputs.dir={tmp_path}",
    )
    assert out.exit_code == 0, out.output
    summary = json.loads((_run(tmp_path) / "summary.json").read_text())
    assert summary["early_stopped"] is True and summary["status"] == "finished"
    assert summary["steps"] == 10 and summary["epochs"] == 0  # stopped mid-epoch
    assert "test/accuracy" in summary["test"]


def _train_process(args: list[str], out_dir: Path, cache_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dlx", "train", *args, f"outputs.dir={out_dir}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "DLX_CACHE": str(cache_dir)},
    )


def _wait_for_checkpoint(out_dir: Path, at_least: int, proc: subprocess.Popen) -> Path:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        for summary in out_dir.glob("digits/*/summary.json"):
            try:
                if (json.loads(summary.read_text()).get("last_checkpoint") or 0) >= at_least:
                    return summary.parent
            except ValueError:  # being rewritten
                pass
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint >= {at_least} (exit {proc.poll()})")


def _kill_and_resume(cli, args, out_dir, cache_dir, delays: list[float]) -> Path:
    """Start the run, SIGKILL it after each delay (resuming in between), then finish it."""
    proc = _train_process(args, out_dir, cache_dir)
    run = _wait_for_checkpoint(out_dir, 14, proc)
    for k, delay in enumerate(delays):
        time.sleep(delay)
        proc.kill()
        proc.wait()
        last_logged = max(r["step"] for r in read_metrics(run / "metrics.jsonl"))
        if k + 1 < len(delays):
            proc = _train_process([f"resume={run}"], out_dir, cache_dir)
            _wait_for_checkpoint(out_dir, last_logged + 7, proc)
    resumed = cli("train", f"resume={run}")
    assert resumed.exit_code == 0, resumed.output
    start = int(resumed.output.split("resuming from step ")[1].split()[0].rstrip(":,"))
    assert start % 7 == 0 or start % PER_EPOCH == 0  # a complete checkpoint
    # at most one save interval (+ the one being written when killed) of work is lost
    assert last_logged - start <= 2 * 7 + 16, (last_logged, start)
    return run


def _assert_same_run(run: Path, ref: Path) -> None:
    for a, b in zip(_params(run), _params(ref), strict=True):
        np.testing.assert_array_equal(a, b)  # bit-identical, optimizer state included

    def losses(r: Path) -> np.ndarray:
        rows = read_metrics(r / "metrics.jsonl")
        return np.array([(x["step"], x["train/loss"]) for x in rows if "train/loss" in x])

    got, want = losses(run), losses(ref)
    assert list(got[:, 0]) == list(range(1, 8 * PER_EPOCH + 1))  # each step logged once
    np.testing.assert_array_equal(got, want)


ARGS = [*BASE, "trainer.epochs=8", "trainer.log_every=1", "trainer.checkpoint_every_steps=7"]


@pytest.fixture(scope="module")
def uninterrupted(cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("whole")
    out = cli("train", *ARGS, f"outputs.dir={root}")
    assert out.exit_code == 0, out.output
    return _run(root)


def test_kill_9_mid_epoch_resumes_bit_identical(
    cli, tmp_path: Path, cache_dir: Path, uninterrupted: Path
) -> None:
    run = _kill_and_resume(cli, ARGS, tmp_path, cache_dir, [0.3])
    _assert_same_run(run, uninterrupted)


@pytest.mark.slow
def test_kill_9_at_random_moments_resumes_bit_identical(
    cli, tmp_path: Path, cache_dir: Path, uninterrupted: Path
) -> None:
    rnd = random.Random(0)
    run = _kill_and_resume(cli, ARGS, tmp_path, cache_dir, [rnd.uniform(0, 0.8) for _ in range(3)])
    _assert_same_run(run, uninterrupted)
