"""Config composition: every recipe composes, overrides apply, user recipes are found,
and bad input becomes a UserError that names the problem and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlx.config import compose, find_recipes
from dlx.config.paths import packaged_dir
from dlx.errors import UserError

SHIPPED = sorted(p.stem for p in packaged_dir("recipes").glob("*.yaml"))


def test_recipes_are_shipped() -> None:
    assert {"cnn", "cnn_small", "digits"} <= set(SHIPPED)


@pytest.mark.parametrize("recipe", SHIPPED)
def test_every_recipe_composes(recipe: str) -> None:
    cfg = compose([f"recipe={recipe}"])
    assert cfg.recipe == recipe
    assert cfg.data.batch_size > 0 and cfg.model.name and cfg.optim.lr > 0
    text = (packaged_dir("recipes") / f"{recipe}.yaml").read_text()
    assert text.startswith("#"), "a recipe starts with a comment saying what it reproduces"
    assert "dlx train" in text, "a recipe's comment holds the command that runs it"


def test_default_recipe_is_cnn_on_mnist() -> None:
    cfg = compose([])
    assert (cfg.recipe, cfg.data.name, cfg.model.name) == ("cnn", "mnist", "cnn")


def test_overrides_apply_with_hydra_grammar() -> None:
    cfg = compose(
        [
            "recipe=cnn",
            "optim=sgd",
            "optim.lr=0.3",
            "trainer.epochs=7",
            "seed=5",
            "model.features=[8,16]",
        ]
    )
    assert cfg.optim.name == "sgd" and cfg.optim.lr == pytest.approx(0.3)
    assert cfg.optim.nesterov is True  # from conf/optim/sgd.yaml
    assert (cfg.trainer.epochs, cfg.seed, list(cfg.model.features)) == (7, 5, [8, 16])


def test_user_recipe_in_cwd_and_config_dir(tmp_path: Path, monkeypatch) -> None:
    body = "# mine\ndefaults:\n  - dlx\n  - override data: digits\n  - _self_\nseed: 42\n"
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "mine.yaml").write_text(body)
    monkeypatch.chdir(tmp_path)
    assert "mine" in find_recipes()
    assert compose(["recipe=mine"]).seed == 42

    other = tmp_path / "elsewhere"
    (other / "optim").mkdir(parents=True)
    (other / "theirs.yaml").write_text(body.replace("42", "7"))
    (other / "optim" / "fast.yaml").write_text("name: sgd\nlr: 0.5\nmomentum: 0.0\n")
    cfg = compose(["recipe=theirs", "optim=fast"], config_dir=other)
    assert (cfg.seed, cfg.optim.name, cfg.optim.lr) == (7, "sgd", 0.5)


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["recipe=cnnn"], ["unknown recipe 'cnnn'", "Did you mean: cnn"]),
        (["optim=adamx"], ["unknown option 'adamx'", "config group 'optim'", "adam, adamw"]),
        (["optim.lrr=1"], ["unknown config key 'optim.lrr'", "optim.lr"]),
        (["trainer.epoch=2"], ["unknown config key 'trainer.epoch'", "trainer.epochs"]),
        (["optim.lr=fast"], ["wrong value for 'optim.lr'", "'fast'"]),
        (["data.batch_size=1.5"], ["wrong value for 'data.batch_size'"]),
        (["data.batch_size=0"], ["'data.batch_size' must be a finite number > 0"]),
        (["trainer.progress=loud"], ["'trainer.progress' must be one of"]),
        (["optim.lr=(("], ["cannot parse override"]),
        (
            ["parallel.xla_flags=--xla_cpu_enable_fast_math=true"],
            ["its value contains '='", "'parallel.xla_flags=\"--xla_cpu_enable_fast_math=true\"'"],
        ),
    ],
)
def test_bad_overrides_are_user_errors(overrides: list[str], needles: list[str]) -> None:
    with pytest.raises(UserError) as info:
        compose(overrides)
    text = f"{info.value} {info.value.hint}"
    for needle in needles:
        assert needle in text


def test_a_composed_recipe_is_cached_until_a_yaml_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib
    import time

    composing = importlib.import_module("dlx.config.compose")  # the module, not the function

    monkeypatch.setenv("DLX_CACHE", str(tmp_path / "cache"))
    user = tmp_path / "mine"
    (user / "optim").mkdir(parents=True)
    (user / "mine.yaml").write_text("defaults:\n  - dlx\n  - _self_\nrecipe: mine\nseed: 3\n")
    (user / "optim" / "fast.yaml").write_text("name: sgd\nlr: 0.5\n")
    args = (["recipe=mine", "optim=fast", "trainer.epochs=2"], user)
    first = compose(*args)
    calls = []
    real = composing._hydra
    monkeypatch.setattr(composing, "_hydra", lambda *a: calls.append(a) or real(*a))
    again = compose(*args)
    assert calls == [] and again == first  # the cache answered, with the same config
    time.sleep(0.01)  # a later mtime even on coarse clocks
    (user / "optim" / "fast.yaml").write_text("name: sgd\nlr: 0.25\n")
    changed = compose(*args)
    assert len(calls) == 1 and changed.optim.lr == 0.25 and first.optim.lr == 0.5
    assert compose(["recipe=mine", "optim=fast", "trainer.epochs=3"], user).trainer.epochs == 3
