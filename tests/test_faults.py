"""Faults and hostile input, round two: a diverged model never becomes a checkpoint, resume
never mixes checkpoints, nothing is written through a symlink out of the run dir, one process
per run dir, signals outside the loop, sweep trials die with their worker, bad values are
exit-2 errors, a full disk is one message, and summary.json shows a run's progress live."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

SLOW = pytest.mark.slow
TINY = ["recipe=digits", "data.batch_size=32", "trainer.progress=plain", "data.limit_train=320"]


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside the paths the tests look for


def _runs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "digits").iterdir() if p.is_dir())


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _steps(run: Path, kind: str) -> list[int]:
    from dlx.checkpoint import RunCheckpoints

    ckpt = RunCheckpoints(run / "checkpoints", create=False)
    try:
        return sorted(ckpt.steps(kind))
    finally:
        ckpt.close()


def _params(run: Path, kind: str, step: int | None = None) -> list[np.ndarray]:
    from dlx.restore import load_run

    params = load_run(run, kind=kind, step=step).state.params
    return [np.asarray(p) for p in jax.tree_util.tree_leaves(params)]


def _train(cli, *args: str):
    return cli("train", *args)


def _text(result) -> str:
    """The command's output with rich's line wrapping undone (words joined by one space)."""
    return " ".join(result.output.split())


def _corrupt(step_dir: Path) -> None:
    for f in step_dir.rglob("*"):
        if f.is_file() and "state" in f.parts and f.stat().st_size > 0:
            f.write_bytes(b"\0" * 7)


# ---- 1. divergence ---------------------------------------------------------------------------


def test_a_nan_eval_never_reaches_a_checkpoint(cli, tmp_path: Path) -> None:
    # The issue's case: one full-batch SGD step per epoch at lr 1e6. Epoch 2's val loss is
    # NaN while its accuracy (0.09) beats epoch 1's: that state used to be saved as best.
    out = _train(
        cli, "recipe=digits", "optim=sgd", "optim.lr=1e6", "data.batch_size=1294",
        "trainer.epochs=3", "trainer.progress=plain", f"outputs.dir={tmp_path}",
    )  # fmt: skip
    assert out.exit_code == 3, out.output
    (run,) = _runs(tmp_path)
    summary = _summary(run)
    assert summary["status"] == "diverged"
    assert "val/loss is nan" in summary["diverged_reason"]
    assert _steps(run, "latest") == [1] and _steps(run, "best") == [1]
    for kind in ("latest", "best"):
        assert all(np.isfinite(p).all() for p in _params(run, kind))
    assert "the last good checkpoint (step 1)" in _text(out)
    evaluated = cli("eval", str(run))
    assert evaluated.exit_code == 0, evaluated.output
    assert not re.search(r"\bnan\b", evaluated.output.replace(str(tmp_path), "")), evaluated.output


@pytest.mark.slow
def test_divergence_before_any_checkpoint_says_none_was_saved(cli, tmp_path: Path) -> None:
    out = _train(
        cli, "recipe=digits", "optim=sgd", "optim.lr=1e12", "data.batch_size=1294",
        "trainer.epochs=2", "trainer.progress=plain", f"outputs.dir={tmp_path}",
    )  # fmt: skip
    assert out.exit_code == 3, out.output
    (run,) = _runs(tmp_path)
    assert _steps(run, "latest") == [] and _steps(run, "best") == []
    assert "none was saved" in _text(out) and "last good checkpoint" not in _text(out)


def test_an_infinite_gradient_norm_is_divergence_even_with_a_finite_loss() -> None:
    from dlx.training.loop import non_finite, watched_train_metrics

    metrics = {"loss": np.float32(7e24), "accuracy": 0.1, "grad_norm": np.float32(np.inf)}
    watched = watched_train_metrics(metrics)
    assert set(watched) == {"loss", "grad_norm"}
    values = {k: float(v) for k, v in watched.items()}
    assert non_finite(values, tuple(values)) == "grad_norm is inf"
    assert non_finite({"loss": 1.0, "grad_norm": 3.0}, ("loss", "grad_norm")) == ""
    gan = watched_train_metrics({"loss": 1.0, "d_grad_norm": 1.0, "g_grad_norm": 2.0})
    assert set(gan) == {"loss", "d_grad_norm", "g_grad_norm"}


@pytest.mark.slow  # the unit test above covers the check; this one the whole run
def test_adam_blowing_up_stops_at_the_first_non_finite_step(cli, tmp_path: Path) -> None:
    out = _train(
        cli, *TINY, "optim.lr=1e30", "trainer.epochs=3", "trainer.log_every=1",
        f"outputs.dir={tmp_path}",
    )  # fmt: skip
    assert out.exit_code == 3, out.output
    (run,) = _runs(tmp_path)
    summary = _summary(run)
    assert summary["diverged_reason"].startswith("train ")
    for kind in ("latest", "best"):
        for step in _steps(run, kind):
            assert all(np.isfinite(p).all() for p in _params(run, kind, step))


# ---- 2. resume never mixes checkpoints -------------------------------------------------------


def _two_then_three_epochs(cli, root: Path) -> tuple[Path, int, int]:
    """A run whose best improved at epochs 2 and 3, and a copy of its epoch-2 best."""
    args = [*TINY, "trainer.best_metric=val/loss", f"outputs.dir={root}"]
    assert _train(cli, *args, "trainer.epochs=2").exit_code == 0
    (run,) = _runs(root)
    (best2,) = _steps(run, "best")
    shutil.copytree(run / "checkpoints" / "best" / str(best2), root / "best2")
    assert _train(cli, f"resume={run}", "trainer.epochs=3").exit_code == 0
    (best3,) = _steps(run, "best")
    assert best3 > best2 and _summary(run)["best"]["step"] == best3  # the premise
    return run, best2, best3


def test_killed_between_latest_and_best_commits_resumes_consistently(cli, tmp_path: Path) -> None:
    run, best2, best3 = _two_then_three_epochs(cli, tmp_path)
    # What a kill between the two commits of epoch 3 leaves: latest/<best3> (whose meta says
    # best = best3) next to the previous best/<best2>, and a summary still "running".
    shutil.rmtree(run / "checkpoints" / "best" / str(best3))
    shutil.copytree(tmp_path / "best2", run / "checkpoints" / "best" / str(best2))
    summary = _summary(run)
    (run / "summary.json").write_text(json.dumps({**summary, "status": "running", "pid": -1}))
    out = _train(cli, f"resume={run}")
    assert out.exit_code == 0, out.output
    summary = _summary(run)
    assert summary["tested_checkpoint"] == f"best (step {best3})"
    assert _steps(run, "best") == [best3], "the missing best commit is completed"
    for a, b in zip(_params(run, "best"), _params(run, "latest", best3), strict=True):
        np.testing.assert_array_equal(a, b)  # best's weights are that step's
    evaluated = cli("eval", str(run))
    assert f"{summary['test']['test/accuracy']:.4f}" in _text(evaluated)


def test_a_corrupt_best_does_not_block_resume(cli, tmp_path: Path) -> None:
    args = [*TINY, f"outputs.dir={tmp_path}"]
    assert _train(cli, *args, "trainer.epochs=2").exit_code == 0
    (run,) = _runs(tmp_path)
    (best,) = _steps(run, "best")
    _corrupt(run / "checkpoints" / "best" / str(best))
    out = _train(cli, f"resume={run}", "trainer.epochs=3")
    assert out.exit_code == 0, out.output
    summary = _summary(run)
    assert summary["status"] == "finished" and summary["epochs"] == 3
    (best_after,) = _steps(run, "best")
    assert summary["tested_checkpoint"] == f"best (step {best_after})"
    assert all(np.isfinite(p).all() for p in _params(run, "best"))


def test_a_corrupt_step_resume_fell_back_over_is_rewritten(cli, tmp_path: Path) -> None:
    args = [*TINY, f"outputs.dir={tmp_path}"]
    assert _train(cli, *args, "trainer.epochs=2").exit_code == 0
    (run,) = _runs(tmp_path)
    first, last = _steps(run, "latest")
    _corrupt(run / "checkpoints" / "latest" / str(last))
    # Resume falls back to `first`, retrains to `last` and must write it anew.
    (run / "summary.json").write_text(json.dumps({**_summary(run), "status": "preempted"}))
    out = _train(cli, f"resume={run}")
    assert out.exit_code == 0, out.output
    assert f"resuming from step {first}" in _text(out)
    assert _steps(run, "latest") == [first, last]
    assert all(np.isfinite(p).all() for p in _params(run, "latest", last))  # readable again


# ---- 3. writes never escape the run dir ------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["metrics.jsonl", pytest.param("train.log", marks=SLOW), pytest.param("plots", marks=SLOW)],
)
def test_resume_refuses_a_symlink_out_of_the_run_dir(cli, tmp_path: Path, name: str) -> None:
    assert _train(cli, *TINY, "trainer.max_steps=2", f"outputs.dir={tmp_path / 'o'}").exit_code == 0
    (run,) = _runs(tmp_path / "o")
    outside = tmp_path / "precious"
    if name == "plots":
        outside.mkdir()
        (outside / "loss.png").write_bytes(b"mine")
        shutil.rmtree(run / name)
    else:
        outside.write_text("mine\n")
        (run / name).unlink()
    (run / name).symlink_to(outside)
    (run / "summary.json").write_text(json.dumps({**_summary(run), "status": "preempted"}))
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file() and run not in p.parents)

    out = _train(cli, f"resume={run}", "trainer.max_steps=4")
    assert out.exit_code == 2, out.output
    assert "outside the run dir" in _text(out)
    after = sorted(p for p in tmp_path.rglob("*") if p.is_file() and run not in p.parents)
    assert after == files, "nothing new outside the run dir"
    precious = outside / "loss.png" if name == "plots" else outside
    assert precious.read_bytes() == (b"mine" if name == "plots" else b"mine\n")


def test_logs_are_never_opened_through_a_symlink(tmp_path: Path) -> None:
    from dlx.errors import UserError
    from dlx.io import open_append

    target = tmp_path / "elsewhere.txt"
    target.write_text("keep\n")
    link = tmp_path / "metrics.jsonl"
    link.symlink_to(target)
    with pytest.raises(UserError, match="is a symlink"):
        open_append(link)
    assert target.read_text() == "keep\n"


# ---- 4. one process per run dir --------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    from typer.testing import CliRunner

    from dlx.cli import app

    root = tmp_path_factory.mktemp("finished")
    out = CliRunner().invoke(app, ["train", *TINY, "trainer.max_steps=4", f"outputs.dir={root}"])
    assert out.exit_code == 0, out.output
    (run,) = _runs(root)
    return run


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def test_resume_of_a_run_that_is_training_is_refused(cli, finished_run: Path, tmp_path: Path):
    from dlx.runlock import RunLock

    run = _copy(finished_run, tmp_path / "run")
    (run / "summary.json").write_text(json.dumps({**_summary(run), "status": "preempted"}))
    held = RunLock(run).acquire()  # as the training process holds it
    try:
        out = _train(cli, f"resume={run}", "trainer.max_steps=6")
    finally:
        held.release()
    assert out.exit_code == 2, out.output
    assert "is in use" in _text(out) and f"process {os.getpid()}" in _text(out)
    assert _summary(run)["steps"] == 4, "nothing was trained or rewritten"


def test_a_fresh_heartbeat_from_another_host_refuses_a_stale_one_does_not(
    cli, finished_run: Path, tmp_path: Path
) -> None:
    from dlx.runlock import STALE_S

    run = _copy(finished_run, tmp_path / "run")
    (run / "summary.json").write_text(json.dumps({**_summary(run), "status": "preempted"}))
    lock = {"pid": 4242, "host": "node-17", "heartbeat": time.time()}
    (run / ".lock").write_text(json.dumps(lock))
    out = _train(cli, f"resume={run}", "trainer.max_steps=6")
    assert out.exit_code == 2 and "host node-17" in _text(out), out.output
    (run / ".lock").write_text(json.dumps({**lock, "heartbeat": time.time() - STALE_S - 5}))
    out = _train(cli, f"resume={run}", "trainer.max_steps=6")
    assert out.exit_code == 0, out.output
    assert _summary(run)["steps"] == 6


def test_resuming_a_finished_run_does_nothing(cli, finished_run: Path, tmp_path: Path) -> None:
    run = _copy(finished_run, tmp_path / "run")
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    out = _train(cli, f"resume={run}")
    assert out.exit_code == 0, out.output
    assert "already finished" in _text(out)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files


def test_resume_with_another_recipe_is_refused(cli, finished_run: Path) -> None:
    out = _train(cli, f"resume={finished_run}", "recipe=cnn")
    assert out.exit_code == 2 and "is a run of recipe 'digits', not 'cnn'" in _text(out)


# ---- 5. signals outside the loop -------------------------------------------------------------


def _sigterm_then(original):
    def patched(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    return patched


@pytest.mark.parametrize("where", ["test eval", pytest.param("plots", marks=SLOW)])
def test_sigterm_after_the_loop_preempts_the_run(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    import dlx.track.plots
    import dlx.training.fit

    if where == "test eval":
        monkeypatch.setattr(dlx.training.fit, "test", _sigterm_then(dlx.training.fit.test))
    else:
        monkeypatch.setattr(dlx.track.plots, "draw_run", _sigterm_then(dlx.track.plots.draw_run))
    out = _train(cli, *TINY, "trainer.max_steps=3", f"outputs.dir={tmp_path}")
    assert out.exit_code == 128 + signal.SIGTERM, out.output
    (run,) = _runs(tmp_path)
    summary = _summary(run)
    assert summary["status"] == "preempted" and summary["signal"] == signal.SIGTERM
    assert f"dlx train resume={run}" in _text(out)
    monkeypatch.undo()
    resumed = _train(cli, f"resume={run}")
    assert resumed.exit_code == 0, resumed.output
    assert _summary(run)["status"] == "finished" and "test/accuracy" in _summary(run)["test"]


# ---- 6. sweep trials die with their worker ---------------------------------------------------

WORKER = """
import os, subprocess, sys, time
trial = ("import time, dlx.io; dlx.io.die_with_parent(); print('ready', flush=True); "
         "time.sleep(120)")
child = subprocess.Popen([sys.executable, "-c", trial], start_new_session=True,
                         env={**os.environ, "DLX_PARENT_PID": str(os.getpid())},
                         stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "ready"
print(child.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_trial_dies_with_its_killed_worker() -> None:
    from dlx.io import pid_alive

    worker = subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE, text=True)
    trial = int(worker.stdout.readline())
    assert pid_alive(trial)
    os.killpg(os.getpgid(worker.pid), 0)  # the worker runs; the trial is in its own group
    assert os.getpgid(trial) != os.getpgid(worker.pid)
    worker.kill()  # SIGKILL: no handler of the worker's runs
    worker.wait()
    deadline = time.time() + 10
    while pid_alive(trial) and time.time() < deadline:
        time.sleep(0.05)
    assert not pid_alive(trial), "the trial outlived its worker"


# ---- 7-8. bad input: one message, exit 2 -----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["optim.lr=nan"], "'optim.lr' must be a finite number > 0, got nan"),
        (["optim.lr=inf"], "'optim.lr' must be a finite number > 0, got inf"),
        (["optim.b1=1.5"], "'optim.b1' must be a finite number in [0, 1)"),
        (["trainer.best_mode=up"], "'trainer.best_mode' must be one of null, max, min"),
        (["trainer.early_stopping.patience=0"], "'trainer.early_stopping.patience' must be"),
        (["trainer.profile_steps=[5]"], "'trainer.profile_steps' must be [first, last]"),
        (["schedule.warmup_fraction=1.5"], "'schedule.warmup_fraction' must be"),
        (["=3"], "override '=3' is not key=value"),
        (["logger=[jsonl,foo]"], "unknown option 'foo' for config group 'logger'"),
        (["recipe=digits", "model.dropout=2"], "'model.dropout' must be a rate in [0, 1), got 2"),
        (["recipe=digits", "model.features=abc"], "'model.features' must be a list of integers"),
        (["recipe=digits", "model.dense=-3"], "'model.dense' must be > 0, got -3"),
        (["recipe=digits", "task=lm"], "task=lm needs next-token targets"),
        ([*TINY, "trainer.max_steps=2", "trainer.best_metric=val/acc"], "is not a metric"),
    ],
)
def test_values_that_cannot_be_right_are_exit_2(
    cli, tmp_path: Path, args: list[str], needle: str
) -> None:
    out = _train(cli, *args, f"outputs.dir={tmp_path}")
    assert out.exit_code == 2, out.output
    assert needle in _text(out), out.output
    assert "fix:" in _text(out) and "Traceback" not in _text(out)


@pytest.mark.parametrize(
    ("damage", "command"),
    [
        ("garbage", "eval"),
        pytest.param("garbage", "resume", marks=SLOW),
        pytest.param("python_object", "eval", marks=SLOW),
        pytest.param("python_object", "explain", marks=SLOW),
        ("python_object", "resume"),
        ("a_list", "eval"),
    ],
)
def test_a_damaged_config_yaml_is_exit_2(
    cli, finished_run: Path, tmp_path: Path, damage: str, command: str
) -> None:
    run = _copy(finished_run, tmp_path / "run")
    pwned = tmp_path / "pwned"
    (run / "config.yaml").write_text(
        {
            "garbage": "recipe: [digits\nmodel: {{{\n",
            "python_object": f"!!python/object/apply:os.system ['touch {pwned}']\n",
            "a_list": "- just\n- a list\n",
        }[damage]
    )
    args = ["train", f"resume={run}"] if command == "resume" else [command, str(run)]
    out = cli(*args)
    assert out.exit_code == 2, out.output
    assert "config.yaml" in _text(out) and "Traceback" not in _text(out)
    assert not pwned.exists()


def test_an_unwritable_outputs_folder_is_refused_before_compiling(cli, tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    out = _train(cli, *TINY, f"outputs.dir={a_file / 'runs'}")
    assert out.exit_code == 2 and "is a file, not a folder" in _text(out), out.output


def test_a_full_disk_is_one_message(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import shutil as shutil_module

    real = shutil_module.disk_usage

    def nearly_full(path):  # room to start, none for a checkpoint (simulated: a tmpfs needs root)
        usage = real(path)
        return usage._replace(free=3 * 2**20 if "checkpoints" in str(path) else usage.free)

    monkeypatch.setattr(shutil_module, "disk_usage", nearly_full)
    out = _train(cli, *TINY, "model.dense=4096", "trainer.max_steps=2", f"outputs.dir={tmp_path}")
    assert out.exit_code == 2, out.output
    assert "not enough space to write checkpoints" in _text(out)
    (run,) = _runs(tmp_path)
    assert _summary(run)["status"] == "failed"
    assert "DiskFullError" in _summary(run)["error"]


# ---- 9. live progress ------------------------------------------------------------------------


def test_summary_shows_how_far_a_killed_run_got(tmp_path: Path, cache_dir: Path) -> None:
    args = [*TINY, "data.limit_train=null", "trainer.epochs=40", f"outputs.dir={tmp_path}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlx", "train", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "DLX_CACHE": str(cache_dir)},
    )
    deadline, summary = time.time() + 120, {}
    try:
        while time.time() < deadline:
            runs = list(tmp_path.glob("digits/*/summary.json"))
            if runs:
                try:
                    summary = json.loads(runs[0].read_text())
                except ValueError:
                    summary = {}
                if summary.get("last_checkpoint", 0) >= 80:
                    break
            time.sleep(0.1)
    finally:
        proc.kill()  # -9: nothing of dlx's runs after this
        proc.wait()
    assert summary.get("last_checkpoint", 0) >= 80, summary
    run = Path(summary["run_dir"])
    final = _summary(run)
    assert final["status"] == "running" and final["steps"] >= final["last_checkpoint"] >= 80
    from dlx.commands.runs import run_info

    row = run_info(run)
    assert row["status"] == "failed" and row["steps"] == final["steps"]
