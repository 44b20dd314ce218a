"""`dlx train` end to end through the CLI on real (bundled) data, with a few steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dlx.track.metrics import read_metrics

STEPS = 40
ARGS = (
    "recipe=digits",
    f"trainer.max_steps={STEPS}",
    "trainer.log_every=5",
    "data.batch_size=32",
    "trainer.progress=plain",
)


def _only_run(root: Path) -> Path:
    runs = sorted(p for p in (root / "digits").iterdir() if p.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


def _train(cli, root: Path, *extra: str) -> Path:
    result = cli("train", *ARGS, f"outputs.dir={root}", *extra)
    assert result.exit_code == 0, result.output
    return _only_run(root)


@pytest.fixture(scope="module")
def run(cli, tmp_path_factory) -> Path:
    return _train(cli, tmp_path_factory.mktemp("out"))


def test_run_dir_has_every_file(run: Path) -> None:
    for name in (
        "config.yaml",
        "overrides.yaml",
        "meta.json",
        "metrics.jsonl",
        "summary.json",
        "train.log",
    ):
        assert (run / name).is_file(), name
    assert run.parent.name == "digits"
    # <YYYY-mm-dd_HH-MM-SS>_<id>
    date, clock, run_id = run.name.split("_")
    assert len(date) == 10 and len(clock) == 8 and len(run_id) == 4
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["trainer"]["max_steps"] == STEPS and cfg["recipe"] == "digits"
    assert "data.batch_size=32" in yaml.safe_load((run / "overrides.yaml").read_text())
    meta = json.loads((run / "meta.json").read_text())
    assert meta["packages"]["jax"] and meta["devices"] and "train" in meta["command"]
    assert set(meta["git"]) == {"sha", "dirty"}
    assert (run / "checkpoints" / "latest").is_dir() and (run / "checkpoints" / "best").is_dir()


def test_summary_and_loss_went_down(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == STEPS
    assert summary["param_count"] > 0 and summary["samples_per_sec"] > 0
    assert summary["test"]["test/count"] == 359  # 20% of 1797 digits, each counted once
    records = read_metrics(run / "metrics.jsonl")
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(losses) == STEPS // 5
    assert losses[-1] < 0.7 * losses[0], losses
    assert any("val/accuracy" in r for r in records) and any("test/accuracy" in r for r in records)
    log = (run / "train.log").read_text()
    assert "loss" in log and "\x1b[" not in log  # plain text, no terminal control codes


def _deterministic(records: list[dict]) -> list[dict]:
    """Metrics minus wall-clock figures, which differ between any two runs."""
    return [{k: v for k, v in r.items() if "samples_per_sec" not in k} for r in records]


def test_same_seed_same_metrics_other_seed_differs(cli, run: Path, tmp_path: Path) -> None:
    again = _train(cli, tmp_path / "a")
    first = _deterministic(read_metrics(run / "metrics.jsonl"))
    assert _deterministic(read_metrics(again / "metrics.jsonl")) == first
    other = _train(cli, tmp_path / "b", "seed=1")
    assert _deterministic(read_metrics(other / "metrics.jsonl")) != first


def test_two_runs_never_share_a_directory(tmp_path: Path) -> None:
    from dlx.rundir import create_run_dir

    made = {create_run_dir(tmp_path, "x") for _ in range(50)}  # all within ~the same second
    assert len(made) == 50 and all(p.is_dir() and not any(p.iterdir()) for p in made)


def test_no_tty_output_has_no_control_characters(cli, tmp_path: Path) -> None:
    result = cli("train", *ARGS[:-1], "trainer.max_steps=5", f"outputs.dir={tmp_path}")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\r" not in result.output
    assert "parameters" in result.output and "test/accuracy" in result.output


def test_compiled_steps_land_in_the_persistent_cache(run: Path, cache_dir: Path) -> None:
    # $DLX_CACHE/jax holds every compiled program, however quick to compile (the many small
    # ones add up to half a cold start), so a relaunch skips them all.
    import jax
    import jax.numpy as jnp

    cache = cache_dir / "jax"
    assert jax.config.jax_compilation_cache_dir == str(cache)
    assert any(cache.glob("jit_train_step-*-cache"))

    def tiny_program_for_cache_test(x):  # type: ignore[no-untyped-def]
        return x * 3 + 1

    before = set(cache.glob("jit_tiny_program_for_cache_test-*"))
    jax.jit(tiny_program_for_cache_test)(jnp.arange(7.0)).block_until_ready()
    assert set(cache.glob("jit_tiny_program_for_cache_test-*-cache")) - before


def _epoch_run(cli, root: Path, monkeypatch, heartbeat_s: float) -> tuple[list[str], Path]:
    """A 3-epoch plain run (8 steps an epoch, a train line every 4): its console lines."""
    from dlx.track import console

    monkeypatch.setattr(console, "HEARTBEAT_S", heartbeat_s)
    extra = ("trainer.max_steps=null", "trainer.epochs=3", "trainer.log_every=4")
    result = cli("train", *ARGS, "data.limit_train=256", *extra, f"outputs.dir={root}")
    assert result.exit_code == 0, result.output
    return result.output.splitlines(), _only_run(root)


def test_plain_console_prints_one_line_per_epoch(cli, tmp_path: Path, monkeypatch) -> None:
    lines, run = _epoch_run(cli, tmp_path, monkeypatch, heartbeat_s=float("inf"))
    epochs = [i for i, line in enumerate(lines) if line.startswith("epoch ")]
    assert [lines[i].split()[1] for i in epochs] == ["1/3", "2/3", "3/3"]
    assert epochs == list(range(epochs[0], epochs[0] + 3))  # nothing printed in between
    assert epochs[0] <= 5  # run dir, data, task, and the parameters on one line
    assert any(line.startswith("model cnn: 13,706 parameters in 8 arrays") for line in lines)
    assert len(lines) - epochs[-1] <= 10  # then only the final test table and "finished"
    assert not any("val after" in line or " step 4/8 " in line for line in lines)
    # Each line: train means, val metrics, `*` exactly where val/accuracy improved, time.
    vals = [r["val/accuracy"] for r in read_metrics(run / "metrics.jsonl") if "val/loss" in r]
    improved = [v > max(vals[:i], default=-1.0) for i, v in enumerate(vals)]
    for i, better in zip(epochs, improved, strict=True):
        train, val, rest = lines[i].split(" | ")
        assert train.split()[2::2] == ["loss", "acc"], lines[i]
        assert val.startswith("val loss ") and " acc " in val, lines[i]
        assert val.endswith(" *") == better, (lines[i], vals)
        assert rest.endswith(" samples/s") and rest.split()[0].endswith("s"), lines[i]
    # train.log: the same epoch lines, plus the periodic train lines (8 steps / 4 = 2 each).
    log = (run / "train.log").read_text().splitlines()
    assert sum(" epoch " in line and " | val " in line for line in log) == 3
    assert sum(" step 4/8 " in line or " step 8/8 " in line for line in log) == 6
    assert any("Conv_0/kernel 3x3x1x16 144" in line for line in log)  # the parameter table


def test_plain_console_heartbeat_shows_train_lines(cli, tmp_path: Path, monkeypatch) -> None:
    # Past HEARTBEAT_S since the last line, a periodic train line reaches the console too
    # (a long epoch shows it is alive); 0 s: every one of them.
    lines, _ = _epoch_run(cli, tmp_path, monkeypatch, heartbeat_s=0.0)
    assert sum(" step 4/8 " in line or " step 8/8 " in line for line in lines) == 6
    assert sum(line.startswith("epoch ") and " | val " in line for line in lines) == 3
