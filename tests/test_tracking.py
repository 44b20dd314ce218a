"""Loggers (metrics.jsonl, TensorBoard, MLflow), plots and the step profiler."""

from __future__ import annotations

import gzip
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from dlx.errors import UserError
from dlx.track.loggers import check_loggers, make_logger, scalars
from dlx.track.metrics import read_metrics
from dlx.track.plots import plot_run
from dlx.track.profile import NullProfiler, StepProfiler, check_profile, make_profiler

RECORDS = [
    {
        "step": 10,
        "epoch": 1,
        "train/loss": 2.25,
        "train/accuracy": 0.125,
        "train/grad_norm": 1.5,
        "train/lr": 0.001,
        "train/samples_per_sec": 640.0,
    },
    {"step": 20, "epoch": 1, "train/loss": 1.5, "train/accuracy": 0.5, "train/lr": 0.002},
    {"step": 20, "epoch": 1, "val/loss": 1.75, "val/accuracy": 0.375, "val/count": 400},
    {
        "step": 20,
        "epoch": 1,
        "checkpoint": "best (step 20)",
        "test/loss": 1.875,
        "test/accuracy": 0.25,
        "test/count": 359,
    },
]


def _cfg(tmp_path: Path, **logger: dict) -> object:
    return OmegaConf.create(
        {
            "recipe": "digits",
            "data": {"batch_size": 32},
            "outputs": {"dir": str(tmp_path)},
            "logger": logger or {"jsonl": {}, "tensorboard": {"flush_secs": 1}},
        }
    )


def read_events(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of a TensorBoard event file: TFRecord framing around Event protos."""
    from tensorboardX.proto import event_pb2

    raw, i, out = path.read_bytes(), 0, {}
    while i < len(raw):
        (n,) = struct.unpack("<Q", raw[i : i + 8])
        event = event_pb2.Event.FromString(raw[i + 12 : i + 12 + n])
        i += 12 + n + 4  # length, its crc, data, data crc
        for v in event.summary.value:
            if v.HasField("simple_value"):
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_tensorboard_scalars_match_records(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    logger = make_logger(list(cfg.logger), tmp_path, cfg)
    for r in RECORDS:
        logger.write(r)
    logger.close()
    assert read_metrics(tmp_path / "metrics.jsonl") == RECORDS  # jsonl unchanged, always on
    (events,) = tmp_path.glob("events.out.tfevents.*")
    got = read_events(events)
    want: dict[str, list] = {}
    for r in RECORDS:
        for k, v in r.items():
            if k not in ("step", "epoch", "checkpoint") and not k.endswith("/count"):
                want.setdefault(k, []).append((r["step"], v))
    want["train/step_time_s"] = [(10, 32 / 640.0)]  # batch / samples per second
    assert set(got) == set(want)
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        np.testing.assert_allclose([v for _, v in got[tag]], [v for _, v in points], rtol=1e-6)


def test_tensorboard_resume_purges_later_steps(tmp_path: Path) -> None:
    """A resumed run's new event file tells TensorBoard to drop points after the resume step."""
    from tensorboardX.proto import event_pb2

    cfg = _cfg(tmp_path)
    make_logger(list(cfg.logger), tmp_path, cfg, resume_step=20).close()
    (events,) = tmp_path.glob("events.out.tfevents.*")
    raw = events.read_bytes()
    starts = []
    i = 0
    while i < len(raw):
        (n,) = struct.unpack("<Q", raw[i : i + 8])
        event = event_pb2.Event.FromString(raw[i + 12 : i + 12 + n])
        i += 12 + n + 4
        if event.HasField("session_log"):
            starts.append((event.session_log.status, event.step))
    assert starts == [(event_pb2.SessionLog.START, 21)]


def test_scalars_skip_text_bools_and_counts() -> None:
    rec = {"step": 1, "a/x": 1, "a/ok": True, "a/s": "text", "a/count": 5, "a/nan": math.nan}
    assert dict(scalars(rec)) == {"a/x": 1.0, "a/nan": pytest.approx(math.nan, nan_ok=True)}


def test_logger_errors_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match=r"unknown logger 'tensorbord'.*tensorboard"):
        check_loggers(["jsonl", "tensorbord"])
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    with pytest.raises(UserError) as err:
        check_loggers(["mlflow"])
    assert "dlx[mlflow]" in (err.value.hint or "")


def test_logger_config_group_selects_several() -> None:
    from dlx.config import compose

    assert set(compose(["recipe=digits"]).logger) == {"jsonl", "tensorboard"}
    cfg = compose(["recipe=digits", "logger=[jsonl,mlflow]", "logger.mlflow.experiment=x"])
    assert set(cfg.logger) == {"jsonl", "mlflow"} and cfg.logger.mlflow.experiment == "x"
    with pytest.raises(UserError, match="profile_steps"):
        check_profile(
            compose(
                ["recipe=digits", "trainer.profile=true", "trainer.profile_steps=[5,2]"]
            ).trainer
        )


def test_mlflow_logger_local_store(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    cfg = _cfg(tmp_path, jsonl={}, mlflow={"tracking_uri": None, "experiment": None})
    run = tmp_path / "digits" / "2026-01-01_00-00-00_abcd"
    run.mkdir(parents=True)
    logger = make_logger(list(cfg.logger), run, cfg)
    for r in RECORDS:
        logger.write(r)
    (run / "summary.json").write_text('{"status": "finished"}')
    logger.close()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (found,) = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert found.info.run_name == run.name and found.info.status == "FINISHED"
    assert found.data.params["data.batch_size"] == "32"
    history = client.get_metric_history(found.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(10, 2.25), (20, 1.5)]
    # A resumed run logs on into the same MLflow run.
    logger = make_logger(list(cfg.logger), run, cfg, resume_step=20)
    logger.write({"step": 30, "epoch": 2, "train/loss": 1.0})
    logger.close()
    (again,) = client.search_runs([found.info.experiment_id])
    assert again.info.run_id == found.info.run_id and again.info.status == "FINISHED"
    assert len(client.get_metric_history(found.info.run_id, "train/loss")) == 3


def _write_run(root: Path, name: str, scale: float, overrides: list[str]) -> Path:
    run = root / "digits" / name
    run.mkdir(parents=True)
    recs = [{**r, **{k: v * scale for k, v in r.items() if "loss" in k}} for r in RECORDS]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (run / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return run


def _png_size(path: Path) -> tuple[int, int]:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    assert img.std() > 0.01, "a blank image"
    return img.shape[1], img.shape[0]


def test_plot_run_writes_curves_and_lr(tmp_path: Path) -> None:
    run = _write_run(tmp_path, "2026-01-01_00-00-00_aaaa", 1.0, [])
    paths = plot_run(run)
    assert [p.name for p in paths] == ["learning_curves.png", "lr_schedule.png"]
    w, h = _png_size(run / "plots" / "learning_curves.png")
    assert w > 2.5 * h  # loss, accuracy, grad_norm panels side by side
    _png_size(run / "plots" / "lr_schedule.png")
    assert plot_run(tmp_path / "missing") == []


@pytest.fixture()
def helper(monkeypatch: pytest.MonkeyPatch):
    """plots' helper process, started as `prepare_plots` starts it (whatever this test
    process has imported), and stopped after the test."""
    import subprocess
    import sys

    from dlx.track import plots

    proc = subprocess.Popen(
        [sys.executable, "-c", plots._SERVE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    monkeypatch.setattr(plots, "_helper", proc)
    yield proc
    proc.stdin.close()
    proc.wait(timeout=30)


def test_draw_run_in_the_helper_writes_the_plots(helper, tmp_path: Path) -> None:
    from dlx.track.plots import draw_run

    run = _write_run(tmp_path, "2026-01-01_00-00-00_aaaa", 1.0, [])
    assert draw_run(run) == {"files": ["plots/learning_curves.png", "plots/lr_schedule.png"]}
    assert helper.poll() is None  # still serving: the next run is drawn by the same helper
    _png_size(run / "plots" / "learning_curves.png")
    broken = _write_run(tmp_path, "2026-01-01_00-00-01_bbbb", 1.0, [])
    (broken / "plots").write_text("a file where the folder goes")
    result = draw_run(broken)
    assert set(result) == {"error"} and "FileExistsError" in result["error"]


def test_draw_run_without_a_live_helper_draws_here(monkeypatch, tmp_path: Path) -> None:
    import subprocess
    import sys

    from dlx.track import plots

    dead = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.PIPE, text=True)
    dead.wait(timeout=30)
    monkeypatch.setattr(plots, "_helper", dead)
    run = _write_run(tmp_path, "2026-01-01_00-00-00_aaaa", 1.0, [])
    assert plots.draw_run(run)["files"] == ["plots/learning_curves.png", "plots/lr_schedule.png"]
    assert (run / "plots" / "lr_schedule.png").is_file()


def test_a_failed_plot_shows_in_the_summary(cli, monkeypatch, tmp_path: Path) -> None:
    from dlx.track import plots

    def broken(*args: object) -> None:
        raise RuntimeError("no ink")

    # Drawn here, where it breaks: no helper (not even one an earlier run left serving).
    monkeypatch.setattr(plots, "prepare_plots", lambda: None)
    monkeypatch.setattr(plots, "_helper", None)
    monkeypatch.setattr(plots, "learning_curves", broken)
    args = ("recipe=digits", "trainer.max_steps=2", "trainer.progress=none")
    result = cli("train", *args, f"outputs.dir={tmp_path}")
    assert result.exit_code == 0, result.output  # a plot never fails the run
    (run,) = (tmp_path / "digits").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["plots"] == {"error": "RuntimeError: no ink"}


def test_the_dlx_command_leaves_its_plots_to_the_helper(tmp_path: Path, cache_dir: Path) -> None:
    """`dlx train` (the process) returns without waiting for matplotlib; the helper draws the
    PNGs and then records them in summary.json, which says "pending" until it has."""
    import os
    import subprocess
    import sys
    import time

    args = ["recipe=digits", "trainer.max_steps=2", "trainer.progress=none"]
    out = subprocess.run(
        [sys.executable, "-m", "dlx", "train", *args, f"outputs.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        env={**os.environ, "DLX_CACHE": str(cache_dir)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (run,) = (tmp_path / "digits").iterdir()
    deadline = time.time() + 60
    while time.time() < deadline:
        plots = json.loads((run / "summary.json").read_text()).get("plots")
        if plots != {"pending": "drawn by a helper process as dlx exits"}:
            break
        time.sleep(0.1)
    assert plots == {"files": ["plots/learning_curves.png", "plots/lr_schedule.png"]}
    _png_size(run / "plots" / "learning_curves.png")


def test_dlx_plot_overlays_runs(cli, tmp_path: Path) -> None:
    a = _write_run(tmp_path, "2026-01-01_00-00-00_aaaa", 1.0, ["optim.lr=0.001"])
    b = _write_run(tmp_path, "2026-01-01_00-00-01_bbbb", 0.5, ["optim.lr=0.003"])
    out = tmp_path / "cmp.png"
    result = cli(
        "plot", str(a), str(b), "--metric", "val/accuracy", "-m", "train/loss", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    w, h = _png_size(out)
    assert w > h  # two panels side by side
    result = cli("plot", str(tmp_path / "digits"), "--out", str(tmp_path / "all.png"))
    assert result.exit_code == 0 and (tmp_path / "all.png").is_file(), result.output
    bad = cli("plot", str(a), "--metric", "val/acc")
    assert bad.exit_code == 2 and "val/accuracy" in bad.output
    missing = cli("plot", str(tmp_path / "nope"))
    assert missing.exit_code == 2 and "no metrics.jsonl" in missing.output


def test_profiler_traces_the_chosen_steps(tmp_path: Path) -> None:
    import jax
    import jax.numpy as jnp

    @jax.jit
    def dlx_profiled_step(x):
        return jnp.tanh(x @ x) + 1.0

    x = jnp.ones((64, 64))
    prof = StepProfiler(tmp_path / "profile", first=3, last=4)
    for step in range(1, 7):
        prof.on_step(step, x)
        x = dlx_profiled_step(x)
    assert prof.done and not prof.active
    prof.close()
    (run,) = (tmp_path / "profile" / "plugins" / "profile").iterdir()
    assert list(run.glob("*.xplane.pb")), list(run.iterdir())
    with gzip.open(run / "perfetto_trace.json.gz") as f:
        trace = f.read().decode()
    assert "dlx_profiled_step" in trace  # the jitted steps are in the trace

    # Training ends inside the window: close() stops the trace; never reached: nothing.
    prof = StepProfiler(tmp_path / "short", first=2, last=100)
    for step in range(1, 4):
        prof.on_step(step, x)
        x = dlx_profiled_step(x)
    assert prof.active
    prof.close(x)
    assert not prof.active and prof.trace_files()
    never = StepProfiler(tmp_path / "never", first=50, last=60)
    never.on_step(1)
    never.close()
    assert not (tmp_path / "never").exists()


def test_make_profiler_only_when_on_and_writing(tmp_path: Path) -> None:
    on = OmegaConf.create({"profile": True, "profile_steps": [2, 3]})
    off = OmegaConf.create({"profile": False, "profile_steps": [2, 3]})
    assert isinstance(make_profiler(off, tmp_path), NullProfiler)
    assert isinstance(make_profiler(on, None), NullProfiler)  # not process 0
    prof = make_profiler(on, tmp_path)
    assert isinstance(prof, StepProfiler) and (prof.first, prof.last) == (2, 3)
    assert prof.trace_dir == tmp_path / "profile"


def test_train_writes_events_plots_and_profile(cli, tmp_path: Path) -> None:
    """End to end: `dlx train` with the default loggers and trainer.profile=true."""
    result = cli(
        "train",
        "recipe=digits",
        "trainer.max_steps=12",
        "trainer.log_every=4",
        "data.batch_size=32",
        "trainer.progress=plain",
        "trainer.profile=true",
        "trainer.profile_steps=[3,5]",
        f"outputs.dir={tmp_path}",
    )
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "digits").iterdir()
    (events,) = run.glob("events.out.tfevents.*")
    scalars_read = read_events(events)
    losses = [r["train/loss"] for r in read_metrics(run / "metrics.jsonl") if "train/loss" in r]
    np.testing.assert_allclose([v for _, v in scalars_read["train/loss"]], losses, rtol=1e-6)
    assert {"val/accuracy", "test/accuracy", "train/lr", "train/grad_norm"} <= set(scalars_read)
    for png in ("learning_curves.png", "lr_schedule.png"):
        _png_size(run / "plots" / png)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["plots"] == {"files": ["plots/learning_curves.png", "plots/lr_schedule.png"]}
    assert list((run / "profile").glob("plugins/profile/*/*.xplane.pb"))
