"""The compiled train and eval steps: value_and_grad + optax, jitted."""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


class TrainState(flax.struct.PyTreeNode):
    """Everything a step changes. apply_fn/tx are static: they are code, not data."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array  # base key; each step folds in its step number (resume-safe dropout)
    apply_fn: Any = flax.struct.field(pytree_node=False)
    tx: Any = flax.struct.field(pytree_node=False)

    @classmethod
    def create(
        cls, apply_fn: Any, params: Any, tx: optax.GradientTransformation, rng: jax.Array
    ) -> TrainState:
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=rng,
            apply_fn=apply_fn,
            tx=tx,
        )


def masked_loss_and_hits(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, ...]:
    """Per-label cross-entropy and hits, and which labels count (labels < 0 are ignored).

    Works for one label per example (B,) and one per position (B, T) alike.
    """
    valid = labels >= 0
    safe = jnp.where(valid, labels, 0)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
    hits = logits.argmax(-1) == safe
    return loss * valid, hits * valid, valid.astype(jnp.float32)


def train_step(state: TrainState, x: jax.Array, y: jax.Array) -> tuple[TrainState, dict]:
    """One optimizer update on a batch; returns the new state and per-batch metrics."""
    dropout_rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params: Any) -> tuple[jax.Array, tuple]:
        logits = state.apply_fn({"params": params}, x, train=True, rngs={"dropout": dropout_rng})
        loss, hits, valid = masked_loss_and_hits(logits, y)
        n = jnp.maximum(valid.sum(), 1.0)
        return loss.sum() / n, (hits.sum() / n)

    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "accuracy": accuracy, "grad_norm": optax.tree.norm(grads)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(state: TrainState, x: jax.Array, y: jax.Array, mask: jax.Array) -> dict:
    """Sums over the real (mask=True) examples of a padded batch, so every example counts once."""
    logits = state.apply_fn({"params": state.params}, x, train=False)
    loss, hits, valid = masked_loss_and_hits(logits, y)
    m = mask.reshape(mask.shape + (1,) * (y.ndim - 1)).astype(jnp.float32)
    return {
        "loss_sum": (loss * m).sum(),
        "correct": (hits * m).sum(),
        "labels": (valid * m).sum(),  # = examples for classifiers, tokens for LMs
        "count": mask.astype(jnp.float32).sum(),
    }


@functools.cache
def compiled_train_step(donate: bool | None = None) -> Any:
    """The jitted train step, compiled once per process.

    Donating the state lets XLA update params in place: it saves accelerator memory, but on
    XLA:CPU it measured ~5% slower here (1036 vs 1092 samples/s, CNN recipe), so by default
    the state is donated everywhere but on the CPU.
    """
    if donate is None:
        donate = jax.default_backend() != "cpu"
    return jax.jit(train_step, donate_argnums=0 if donate else ())


jit_eval_step = jax.jit(eval_step)
