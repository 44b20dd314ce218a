"""The compiled steps of a continual run: dlx's TrainState and masked loss, plus a per-example
head mask (task-incremental) and, for EWC, the quadratic penalty. One compiled train step per
run: the batch (current + replayed examples) and the penalty keep their shapes from the first
task to the last.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from dlx.continual.ewc import NEG, penalty_value
from dlx.train.step import TrainState, masked_loss_and_hits


def train_step(
    state: TrainState,
    x: jax.Array,
    y: jax.Array,
    allowed: jax.Array,
    penalty: dict | None,
    ewc_lambda: jax.Array,
) -> tuple[TrainState, dict]:
    """One update on cross-entropy over the batch's labelled rows (label < 0: empty replay
    slots) with logits outside each row's `allowed` classes masked out, plus
    ewc_lambda / 2 * sum F (p - p*)^2 when `penalty` is given."""
    dropout_rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params: Any) -> tuple[jax.Array, tuple]:
        logits = state.apply_fn({"params": params}, x, train=True, rngs={"dropout": dropout_rng})
        logits = jnp.where(allowed, logits, NEG)
        loss, hits, valid = masked_loss_and_hits(logits, y)
        n = jnp.maximum(valid.sum(), 1.0)
        ce = loss.sum() / n
        reg = 0.5 * ewc_lambda * penalty_value(penalty, params) if penalty else jnp.zeros(())
        return ce + reg, (ce, reg, hits.sum() / n)

    (loss, (ce, reg, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "ce": ce, "penalty": reg, "accuracy": acc}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(
    state: TrainState, x: jax.Array, y: jax.Array, allowed: jax.Array, mask: jax.Array
) -> dict:
    """Sums over the real rows (mask) of a padded batch, logits limited to `allowed` (C,)."""
    logits = state.apply_fn({"params": state.params}, x, train=False)
    logits = jnp.where(allowed, logits, NEG)
    loss, hits, _ = masked_loss_and_hits(logits, y)
    m = mask.astype(jnp.float32)
    return {"loss_sum": (loss * m).sum(), "correct": (hits * m).sum(), "count": m.sum()}


jit_train_step = jax.jit(train_step)
jit_eval_step = jax.jit(eval_step)
