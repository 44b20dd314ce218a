"""The user's own model, loader and recipe, from their own folder, with no edit to dlx:
`_target_` in a recipe, entry points of an installed package, and the Python API."""

from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

NET = """
import flax.linen as nn


class Wide(nn.Module):
    num_classes: int
    width: int = 16

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes)(nn.relu(nn.Dense(self.width)(x)))


def make(width: int, num_classes: int):
    return Wide(num_classes=num_classes, width=width)


NOT_A_MODULE = 3
"""

LOADER = """
import numpy as np


def load(seed: int, n: int = 200, shift: float = 1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 6)).astype(np.float32) + shift * y[:, None]
    return {"x_train": x[:150], "y_train": y[:150], "x_test": x[150:], "y_test": y[150:]}


def mismatched():
    return {"x_train": np.zeros((10, 2)), "y_train": np.zeros(9, int),
            "x_test": np.zeros((4, 2)), "y_test": np.zeros(4, int)}


def bad_labels():
    return {"x_train": np.zeros((10, 2)), "y_train": np.arange(10) - 1,
            "x_test": np.zeros((4, 2)), "y_test": np.zeros(4, int)}


def with_nan():
    x = np.zeros((10, 2))
    x[3, 1] = np.nan
    return {"x_train": x, "y_train": np.zeros(10, int),
            "x_test": np.zeros((4, 2)), "y_test": np.zeros(4, int)}


def not_arrays():
    return [1, 2, 3]
"""


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request) -> Path:
    """A user's folder: nets_<id>.py, data_<id>.py and recipes/mine.yaml (module names are
    unique per test: Python caches imported modules by name)."""
    tag = f"t{zlib.crc32(request.node.nodeid.encode())}"
    (tmp_path / f"nets_{tag}.py").write_text(NET)
    (tmp_path / f"data_{tag}.py").write_text(LOADER)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "mine.yaml").write_text(
        "# mine\ndefaults:\n  - dlx\n  - _self_\n"
        f"model:\n  _target_: nets_{tag}.Wide\n  width: 24\n"
        f"data:\n  _target_: data_{tag}.load\n  shift: 3.0\n  batch_size: 30\n"
        "trainer:\n  epochs: 25\n  progress: none\noptim:\n  lr: 0.01\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return tmp_path


def _tag(project: Path) -> str:
    return next(project.glob("nets_*.py")).stem.removeprefix("nets_")


def test_own_model_and_loader_from_the_launch_folder(cli, project: Path) -> None:
    out = cli("train", "recipe=mine", "outputs.dir=out")
    assert out.exit_code == 0, out.output
    (run,) = (project / "out" / "mine").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished"
    # 3 well separated classes: a real model learns them; chance is 1/3.
    assert summary["test"]["test/accuracy"] > 0.8
    # 6 inputs -> 24 -> 3: the recipe's width reached the module, num_classes the data's.
    assert summary["param_count"] == 6 * 24 + 24 + 24 * 3 + 3
    # val carved out of the loader's 150 training examples (10% by default).
    assert summary["val"]["val/count"] == 15
    config = (run / "config.yaml").read_text()
    assert "features" not in config  # the base config's cnn keys were not merged in


def test_a_factory_function_and_an_override_of_its_setting(cli, project: Path) -> None:
    tag = _tag(project)
    out = cli(
        "train",
        "recipe=mine",
        f"model._target_=nets_{tag}.make",
        "model.width=8",
        "trainer.max_steps=2",
        "outputs.dir=out",
    )
    assert out.exit_code == 0, out.output
    (run,) = (project / "out" / "mine").iterdir()
    assert json.loads((run / "summary.json").read_text())["param_count"] == 6 * 8 + 8 + 8 * 3 + 3


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("model._target_=nowhere_mod.Net", ["cannot import module 'nowhere_mod'", "fix:"]),
        ("model._target_=nets_TAG.Wyde", ["has no attribute 'Wyde'", "Did you mean: Wide"]),
        ("model._target_=nets_TAG.NOT_A_MODULE", ["not a flax.linen.Module"]),
        ("+model.depth=3", ["has no setting 'model.depth'", "width"]),
        ("data._target_=data_TAG.mismatched ~data.shift", ["y_train", "10", "9"]),
        ("data._target_=data_TAG.bad_labels ~data.shift", ["negative label -1", "y_train"]),
        ("data._target_=data_TAG.with_nan ~data.shift", ["x_train", "NaN"]),
        ("data._target_=data_TAG.not_arrays ~data.shift", ["returned list", "x_train"]),
        ("+data.shfit=1", ["data.shfit is not a parameter", "shift"]),
    ],
)
def test_bad_own_code_is_one_clear_error(
    cli, project: Path, override: str, needles: list[str]
) -> None:
    overrides = override.replace("TAG", _tag(project)).split()
    out = cli("train", "recipe=mine", *overrides, "outputs.dir=out")
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output
    text = " ".join(out.output.split())  # rich wraps long lines
    for needle in needles:
        assert needle in text, out.output
    assert not (project / "out").exists(), "nothing is written"


def test_entry_points_of_an_installed_package(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package that declares `dlx.models` / `dlx.datasets` entry points: its names work as
    model.name / data.name and `dlx recipes` lists them."""
    site = tmp_path / "site"
    (site / "plugpkg").mkdir(parents=True)
    (site / "plugpkg" / "__init__.py").write_text(NET + LOADER)
    info = site / "plugpkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugpkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[dlx.models]\nplugnet = plugpkg:Wide\n\n[dlx.datasets]\nplugdata = plugpkg:load\n"
    )
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "plug.yaml").write_text(
        "defaults:\n  - dlx\n  - _self_\nmodel:\n  name: plugnet\n  width: 12\n"
        "data:\n  name: plugdata\n  batch_size: 30\ntrainer:\n  max_steps: 3\n"
        "  progress: none\n"
    )
    monkeypatch.chdir(tmp_path)
    out = cli("train", "recipe=plug", "outputs.dir=out")
    assert out.exit_code == 0, out.output
    (run,) = (tmp_path / "out" / "plug").iterdir()
    assert json.loads((run / "summary.json").read_text())["param_count"] == 6 * 12 + 12 + 39
    listed = " ".join(cli("recipes").output.split())
    assert "plugnet (plugpkg:Wide)" in listed and "plugdata (plugpkg:load)" in listed


def test_python_api_train_load_predict(project: Path) -> None:
    import dlx

    run = dlx.train("mine", ["outputs.dir=api"])
    assert run.status == "finished" and run.dir.is_dir()
    assert any("test/accuracy" in r for r in run.metrics)
    model = dlx.load(run.dir)
    x, y = model.data.x_test, model.data.y_test
    probs = model.predict(x, batch_size=7)  # batches that do not divide the 50 examples
    assert probs.shape == (50, 3) and np.allclose(probs.sum(-1), 1.0, atol=1e-5)
    accuracy = float((probs.argmax(-1) == y).mean())
    assert accuracy == pytest.approx(run.summary["test"]["test/accuracy"])
    assert np.array_equal(model.classify(x), probs.argmax(-1))
    with pytest.raises(dlx.UserError, match="unknown recipe"):
        dlx.train("no_such_recipe")
