"""Models with state besides their params (BatchNorm's running statistics, `model.norm=batch`
or the user's own module): the train step updates it, eval, `dlx eval`, `dlx.load(...)` and
checkpoints use it, gradient accumulation averages it, and it resumes exactly
(tests/test_resume.py runs its SIGTERM test on such a model)."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

BN = [
    "recipe=digits",
    "model.norm=batch",
    "model.dropout=0.0",
    "data.batch_size=64",
    "parallel=single",
    "trainer.progress=none",
]


def _train(tmp_path: Path, name: str, *more: str) -> Path:
    from dlx.commands.train import train
    from dlx.config import compose

    overrides = [*BN, *more, f"outputs.dir={tmp_path / name}"]
    run_dir, _ = train(compose(overrides), overrides)
    return Path(run_dir)


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("bn"), "run", "trainer.max_steps=60")


def test_running_statistics_are_trained_checkpointed_and_used_by_eval(bn_run: Path) -> None:
    import flax.linen as nn

    import dlx
    from dlx.restore import load_run

    run = load_run(bn_run, kind="best")
    stats = run.state.model_state["batch_stats"]
    assert set(stats) == {"BatchNorm_0", "BatchNorm_1"}
    # Updated by the train steps: no longer BatchNorm's initial mean 0 / var 1.
    assert float(np.abs(np.asarray(stats["BatchNorm_0"]["mean"])).max()) > 1e-3
    assert float(np.abs(np.asarray(stats["BatchNorm_1"]["var"]) - 1).max()) > 1e-3

    # The run's test accuracy (its eval step) and dlx.load's predictions (another code path)
    # agree, and both are the eval-mode model with the checkpoint's statistics.
    summary = json.loads((bn_run / "summary.json").read_text())
    model = dlx.load(bn_run)
    x, y = model.data.x_test, model.data.y_test
    predicted = model.predict(x).argmax(-1)
    assert (predicted == y).mean() == pytest.approx(summary["test"]["test/accuracy"], abs=1e-9)
    module = run.setup.task.model
    assert isinstance(module, nn.Module)
    by_hand = module.apply({"params": run.state.params, **run.state.model_state}, x)
    np.testing.assert_array_equal(predicted, np.asarray(by_hand).argmax(-1))
    # ...and not the initial statistics: with mean 0 / var 1 the predictions change.
    fresh = jax.tree_util.tree_map(np.zeros_like, stats)
    fresh = {k: {"mean": v["mean"], "var": v["var"] + 1} for k, v in fresh.items()}
    untrained = module.apply({"params": run.state.params, "batch_stats": fresh}, x)
    assert (np.asarray(untrained).argmax(-1) != predicted).mean() > 0.05
    assert summary["test"]["test/accuracy"] > 0.6


def test_dlx_eval_and_explain_see_the_running_statistics(bn_run: Path, cli) -> None:
    summary = json.loads((bn_run / "summary.json").read_text())
    result = cli("eval", str(bn_run))
    assert result.exit_code == 0, result.output
    (written,) = [line[6:] for line in result.output.splitlines() if line.endswith(".json")]
    got = json.loads(Path(written).read_text())
    assert got["metrics"]["test/accuracy"] == summary["test"]["test/accuracy"]
    from dlx.restore import load_run

    run = load_run(bn_run, kind="best")  # explain's model: bound to the statistics
    x = run.data.x_test[:8]
    logits = run.model.apply({"params": run.state.params}, x, train=False)
    module = run.setup.task.model
    want = module.apply({"params": run.state.params, **run.state.model_state}, x)
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(want))


def test_grad_accum_averages_the_micro_batches_statistics(tmp_path: Path) -> None:
    """After one step the running mean is m*0 + (1-m)*batch mean: with 2 micro-batches it is
    the mean of their means, which is the whole batch's mean (same sizes), as with one."""
    from dlx.restore import load_run

    def first_mean(run: Path) -> np.ndarray:
        stats = load_run(run, kind="latest").state.model_state["batch_stats"]
        return np.asarray(stats["BatchNorm_0"]["mean"])

    one = first_mean(_train(tmp_path, "one", "trainer.max_steps=1"))
    two = first_mean(_train(tmp_path, "two", "trainer.max_steps=1", "trainer.grad_accum=2"))
    assert np.abs(one).max() > 1e-4
    np.testing.assert_allclose(two, one, rtol=0, atol=1e-6)


def test_users_own_batchnorm_module_trains(tmp_path: Path, monkeypatch, cli) -> None:
    """A Flax module of the user's with BatchNorm and its own mutable counter collection."""
    (tmp_path / "bn_net.py").write_text(
        "import flax.linen as nn\n"
        "import jax.numpy as jnp\n\n\n"
        "class Net(nn.Module):\n"
        "    num_classes: int\n\n"
        "    @nn.compact\n"
        "    def __call__(self, x, train: bool = False):\n"
        "        seen = self.variable('counters', 'seen', lambda: jnp.zeros((), jnp.int32))\n"
        "        if train:\n"
        "            seen.value += x.shape[0]\n"
        "        x = nn.Dense(32)(x.reshape(x.shape[0], -1))\n"
        "        x = nn.BatchNorm(use_running_average=not train)(x)\n"
        "        return nn.Dense(self.num_classes)(nn.relu(x))\n"
    )
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "bn.yaml").write_text(
        "defaults:\n  - dlx\n  - override data: digits\n  - _self_\n"
        "model:\n  _target_: bn_net.Net\n"
    )
    monkeypatch.chdir(tmp_path)
    result = cli(
        "train", "recipe=bn", "trainer.max_steps=5", "data.batch_size=32", "parallel=single",
        f"outputs.dir={tmp_path / 'out'}",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    from dlx.restore import load_run

    (run_dir,) = (tmp_path / "out" / "bn").iterdir()
    state = load_run(run_dir, kind="latest").state
    assert int(state.model_state["counters"]["seen"]) == 5 * 32  # every train step's rows
    assert "batch_stats" in state.model_state
