"""The compiled step: each optimizer and schedule trains, schedules have the promised shape,
and eval counts every example exactly once whatever the batch size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlx.models import build_model
from dlx.tasks import Classify
from dlx.training.loop import evaluate
from dlx.training.optim import make_optimizer
from dlx.training.parallel import compiled_train_step, make_strategy
from dlx.training.step import TrainState

MODEL = build_model({"name": "cnn", "features": [8], "dense": 16, "dropout": 0.0}, 2)
TASK = Classify(MODEL)


def jit_train_step(state: TrainState, x: np.ndarray, y: np.ndarray) -> tuple:
    return compiled_train_step()(TASK, state, {"x": x, "y": y})


ADAM = {"name": "adam", "lr": 3e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.0}


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 1)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int32)  # a learnable rule
    return x, y


def _state(optim: dict, schedule: dict | None = None, steps: int = 30) -> TrainState:
    params = MODEL.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 1), np.float32))["params"]
    tx, _ = make_optimizer(optim, schedule or {"name": "constant"}, steps)
    return TrainState.create(MODEL.apply, params, tx, jax.random.PRNGKey(1))


@pytest.mark.parametrize(
    "optim",
    [
        ADAM,
        {**ADAM, "weight_decay": 1e-4, "clip_norm": 1.0},
        {**ADAM, "name": "adamw", "weight_decay": 1e-2},
        {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
        {"name": "sgd", "lr": 0.1, "momentum": 0.0, "nesterov": False},
    ],
)
def test_each_optimizer_lowers_the_loss(batch, optim: dict) -> None:
    state = _state(optim)
    losses = []
    for _ in range(30):
        state, m = jit_train_step(state, *batch)
        losses.append(float(m["loss"]))
    assert int(state.step) == 30
    assert np.isfinite(losses).all() and losses[-1] < 0.6 * losses[0], losses


def test_clipping_bounds_the_update(batch) -> None:
    before = _state({**ADAM, "name": "sgd", "lr": 1.0, "momentum": 0.0, "clip_norm": 1e-3})
    after, _ = jit_train_step(before, *batch)
    fresh = _state({**ADAM, "name": "sgd", "lr": 1.0, "momentum": 0.0, "clip_norm": 1e-3})
    delta = jax.tree_util.tree_map(lambda a, b: a - b, after.params, fresh.params)
    norm = float(np.sqrt(sum(float((d**2).sum()) for d in jax.tree_util.tree_leaves(delta))))
    assert norm == pytest.approx(1e-3, rel=1e-3)


def test_warmup_cosine_shape() -> None:
    _, sched = make_optimizer(
        ADAM, {"name": "warmup_cosine", "warmup_fraction": 0.1, "final_fraction": 0.01}, 100
    )
    assert float(sched(0)) == 0.0
    assert float(sched(10)) == pytest.approx(3e-3)
    assert float(sched(100)) == pytest.approx(3e-5)
    assert float(sched(5)) < float(sched(10)) and float(sched(50)) < float(sched(10))


@pytest.mark.parametrize("eval_batch", [1, 7, 32, 100])
def test_eval_counts_every_example_once(batch, eval_batch: int) -> None:
    x, y = batch
    single = make_strategy("single")
    arrays = {"x": x[:29], "y": y[:29]}
    out = evaluate(TASK, _state(ADAM), arrays, eval_batch, single)
    assert out["count"] == 29
    reference = evaluate(TASK, _state(ADAM), arrays, 29, single)
    assert out["accuracy"] == pytest.approx(reference["accuracy"])
    assert out["loss"] == pytest.approx(reference["loss"], rel=1e-5)


def test_negative_labels_are_ignored_by_loss_and_accuracy() -> None:
    from dlx.training.step import masked_loss_and_hits

    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 7))
    labels = np.array([[1, 2, 3, -1, -1], [4, 5, 6, 0, -1]], np.int32)
    loss, hits, valid = masked_loss_and_hits(logits, labels)
    assert float(valid.sum()) == 7
    assert float(loss[0, 3:].sum()) == 0.0 and float(hits[1, 4]) == 0.0
    # What the model outputs at ignored positions must not matter: other logits there, the
    # same loss and hits; other logits at a counted position change the loss.
    ignored = np.asarray(labels < 0)[..., None]
    noise = 10 * jax.random.normal(jax.random.PRNGKey(1), logits.shape)
    loss2, hits2, _ = masked_loss_and_hits(jnp.where(ignored, noise, logits), labels)
    assert float(loss2.sum()) == pytest.approx(float(loss.sum()))
    assert float(hits2.sum()) == float(hits.sum())
    counted = jnp.where(ignored, logits, noise)
    assert float(masked_loss_and_hits(counted, labels)[0].sum()) != pytest.approx(float(loss.sum()))


def test_label_smoothing_is_optax_smoothed_cross_entropy_over_the_allowed_classes() -> None:
    import optax

    from dlx.tasks.supervised import NEG
    from dlx.training.step import masked_loss_and_hits

    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(6, 5)).astype(np.float32))
    labels = jnp.asarray([0, 1, 2, 3, 4, -1])  # the last is padding
    plain, _, _ = masked_loss_and_hits(logits, labels)
    smoothed, _, valid = masked_loss_and_hits(logits, labels, 0.1)
    target = optax.smooth_labels(jax.nn.one_hot(jnp.maximum(labels, 0), 5), 0.1)
    want = optax.softmax_cross_entropy(logits, target) * valid
    np.testing.assert_allclose(smoothed, want, rtol=1e-6)
    assert float(smoothed[-1]) == 0.0 and not np.allclose(smoothed[:5], plain[:5])
    # A head mask (task-incremental): the uniform part covers the 2 allowed classes only.
    masked = jnp.where(jnp.arange(5) < 2, logits, NEG)
    got, _, _ = masked_loss_and_hits(masked, jnp.asarray([0, 1, 1, 0, 1, 0]), 0.2)
    target2 = optax.smooth_labels(jax.nn.one_hot(jnp.asarray([0, 1, 1, 0, 1, 0]), 2), 0.2)
    np.testing.assert_allclose(got, optax.softmax_cross_entropy(logits[:, :2], target2), rtol=1e-5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["task.label_smoothing=1.5"], "task.label_smoothing must be a number in [0, 1)"),
        (["+task.smoothing=0.1"], "no setting 'task.smoothing'"),
        (["task=regress", "+task.label_smoothing=0.1"], "task=regress has no setting"),
    ],
)
def test_bad_task_settings_are_one_clear_error(cli, tmp_path, extra, message) -> None:
    result = cli("train", "recipe=digits", "trainer.max_steps=1", *extra,
                 f"outputs.dir={tmp_path}")  # fmt: skip
    assert result.exit_code == 2 and message in result.output, result.output
    assert not any(tmp_path.iterdir())
