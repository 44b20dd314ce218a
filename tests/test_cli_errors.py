"""Bad input through the real `dlx` process: one clear message, exit 2, no traceback;
`--debug` shows the traceback. Plus the CLI's fast paths (help, show, recipes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def dlx(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CI": "true", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "dlx", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["train", "recipe=cnnn"], ["unknown recipe 'cnnn'", "cnn", "dlx recipes"]),
        (
            ["train", "model=resnet9000"],
            ["unknown option 'resnet9000'", "group 'model'", "cnn_small"],
        ),
        (["train", "optim.lrr=0.1"], ["unknown config key 'optim.lrr'", "optim.lr"]),
        (["train", "trainer.epochs=three"], ["wrong value for 'trainer.epochs'", "'three'"]),
        (["show", "data.batch_size=-4"], ["'data.batch_size' must be a finite number > 0"]),
        (["train", "recipe=digits", "model.widht=3"], ["unknown config key 'model.widht'"]),
        (["train", "recipe=digits", "+model.widht=3"], ["no setting 'model.widht'", "dense"]),
    ],
)
def test_user_errors_exit_2_without_traceback(args: list[str], needles: list[str]) -> None:
    out = dlx(*args)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert out.stderr.startswith("error:")
    for needle in needles:
        assert needle in out.stderr


def test_missing_dataset_says_how_to_use_data_path(tmp_path: Path) -> None:
    out = dlx("train", f"data.path={tmp_path / 'nowhere'}", f"outputs.dir={tmp_path / 'o'}")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "nowhere" in out.stderr and "data.path" in out.stderr
    assert not (tmp_path / "o").exists(), "a run that cannot start leaves no run dir"


def test_all_sources_failing_lists_what_was_tried(tmp_path: Path) -> None:
    out = dlx("train", "data.download=false", f"data.cache_dir={tmp_path}")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "cache" in out.stderr and "data.path=" in out.stderr


def test_debug_shows_the_traceback() -> None:
    out = dlx("train", "recipe=cnnn", "--debug")
    assert out.returncode != 0 and "Traceback" in out.stderr and "UserError" in out.stderr


def test_help_does_not_import_jax() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from dlx.cli import app;"
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output;"
        "r = CliRunner().invoke(app, ['train', '--help']); assert 'Examples' in r.output;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _command_names() -> list[str]:
    from dlx.cli import app

    return sorted(c.name or c.callback.__name__.rstrip("_") for c in app.registered_commands)


def test_every_command_help_has_examples() -> None:
    """Every command the app registers (a new one is covered without editing this test)
    shows examples of itself in --help."""
    from typer.testing import CliRunner

    from dlx.cli import app

    names = _command_names()
    assert {"train", "eval", "sweep", "sample", "explain", "runs", "launch", "plot"} <= set(names)
    for name in names:
        out = CliRunner().invoke(app, [name, "--help"], terminal_width=200)
        assert out.exit_code == 0, out.output
        assert "Examples" in out.output, f"dlx {name} --help has no examples"
        assert f"dlx {name}" in out.output.split("Examples", 1)[1], f"dlx {name}: examples"


def test_show_prints_composed_yaml() -> None:
    out = dlx("show", "recipe=digits", "optim.lr=0.5")
    assert out.returncode == 0
    assert (
        "recipe: digits" in out.stdout and "lr: 0.5" in out.stdout and "name: digits" in out.stdout
    )


def test_recipes_lists_shipped_and_user_recipes(tmp_path: Path) -> None:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "mine.yaml").write_text("# My own experiment\ndefaults:\n  - dlx\n")
    out = dlx("recipes", cwd=tmp_path)
    assert out.returncode == 0
    for needle in ("cnn_small", "digits", "mine", "My own experiment", "CNN on MNIST"):
        assert needle in out.stdout
