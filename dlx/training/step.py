"""The train state and the few helpers every task's step is written with.

A task (dlx/tasks) writes one step function, `task.train_step(state, batch, axis)`. It is
the same code on one device and on many: `axis` is None under plain jit and under `sharded`
(XLA inserts the all-reduce), and the pmap axis name under `pmap`, where the helpers below
turn per-device sums into global ones. The strategies (dlx/training/parallel.py) jit or pmap
that one function; none of them rewrites it.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


class TrainState(flax.struct.PyTreeNode):
    """Everything a step changes. apply_fn/tx are static: they are code, not data.

    `extra` holds arrays a task carries from step to step besides params and optimizer
    state (the EWC penalty of a continual run); it is placed, checkpointed and restored with
    the rest. `tx` is whatever the task's step uses: one optax transformation for supervised
    tasks, a pair for a GAN.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array  # base key; each step folds in its step number (resume-safe dropout)
    extra: Any = flax.struct.field(default_factory=dict)
    apply_fn: Any = flax.struct.field(pytree_node=False, default=None)
    tx: Any = flax.struct.field(pytree_node=False, default=None)

    @classmethod
    def create(
        cls,
        apply_fn: Any,
        params: Any,
        tx: optax.GradientTransformation,
        rng: jax.Array,
        extra: Any = None,
    ) -> TrainState:
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=rng,
            extra={} if extra is None else extra,
            apply_fn=apply_fn,
            tx=tx,
        )


def step_rng(state: TrainState, axis: str | None) -> jax.Array:
    """This step's key: a function of (rng, step), so a resumed run draws the same dropout
    masks. Under pmap each device folds in its index (its shard needs its own masks)."""
    rng = jax.random.fold_in(state.rng, state.step)
    return rng if axis is None else jax.random.fold_in(rng, jax.lax.axis_index(axis))


def global_sum(x: Any, axis: str | None) -> Any:
    """A per-shard sum made global: psum under pmap; already global otherwise."""
    return x if axis is None else jax.lax.psum(x, axis)


def shard_mean(local_sum: jax.Array, global_count: jax.Array, axis: str | None) -> jax.Array:
    """The term whose gradient, averaged over devices by `mean_grads`, is the gradient of the
    global mean `sum / count`: `sum / count` on one device, `sum * n_devices / count` per
    pmap device (the pmean then divides by n_devices again)."""
    if axis is None:
        return local_sum / global_count
    return local_sum * jax.lax.psum(1, axis) / global_count


def mean_grads(grads: Any, axis: str | None) -> Any:
    return grads if axis is None else jax.lax.pmean(grads, axis)


def apply_gradients(state: TrainState, grads: Any, **changes: Any) -> TrainState:
    """One optax update of the params with `grads` and the step counter advanced."""
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, **changes)


def masked_loss_and_hits(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, ...]:
    """Per-label cross-entropy and hits, and which labels count (labels < 0 are ignored).

    Works for one label per example (B,) and one per position (B, T) alike.
    """
    valid = labels >= 0
    safe = jnp.where(valid, labels, 0)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
    hits = logits.argmax(-1) == safe
    return loss * valid, hits * valid, valid.astype(jnp.float32)


def example_mask(mask: jax.Array, like: jax.Array) -> jax.Array:
    """An eval batch's (B,) real-example mask broadcast over `like`'s per-position axes."""
    return mask.reshape(mask.shape + (1,) * (like.ndim - 1)).astype(jnp.float32)
