"""The compiled step: each optimizer and schedule trains, schedules have the promised shape,
and eval counts every example exactly once whatever the batch size."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from dlx.models import build_model
from dlx.train.loop import evaluate
from dlx.train.optim import make_optimizer
from dlx.train.parallel import make_strategy
from dlx.train.step import TrainState, compiled_train_step

jit_train_step = compiled_train_step()

ADAM = {"name": "adam", "lr": 3e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.0}


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 1)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int32)  # a learnable rule
    return x, y


def _state(optim: dict, schedule: dict | None = None, steps: int = 30) -> TrainState:
    model = build_model({"name": "cnn", "features": [8], "dense": 16, "dropout": 0.0}, 2)
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 1), np.float32))["params"]
    tx, _ = make_optimizer(optim, schedule or {"name": "constant"}, steps)
    return TrainState.create(model.apply, params, tx, jax.random.PRNGKey(1))


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
    out = evaluate(_state(ADAM), x[:29], y[:29], eval_batch, single)
    assert out["count"] == 29
    reference = evaluate(_state(ADAM), x[:29], y[:29], 29, single)
    assert out["accuracy"] == pytest.approx(reference["accuracy"])
    assert out["loss"] == pytest.approx(reference["loss"], rel=1e-5)


def test_negative_labels_are_ignored_by_loss_and_accuracy() -> None:
    from dlx.train.step import masked_loss_and_hits

    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 7))
    labels = np.array([[1, 2, 3, -1, -1], [4, 5, 6, 0, -1]], np.int32)
    loss, hits, valid = masked_loss_and_hits(logits, labels)
    assert float(valid.sum()) == 7
    assert float(loss[0, 3:].sum()) == 0.0 and float(hits[1, 4]) == 0.0
    other = labels.copy()
    other[0, 3:] = 0  # what sits under ignored positions must not matter
    loss2, _, _ = masked_loss_and_hits(logits, np.where(labels < 0, -1, other))
    assert float(loss.sum()) == pytest.approx(float(loss2.sum()))
