"""The train state and the few helpers every task's step is written with.

A task (dlx/tasks) writes one step function, `task.train_step(state, batch, axis)`. It is
the same code on one device and on many: `axis` is None under plain jit and under `sharded`
(XLA inserts the all-reduce), and the pmap axis name under `pmap`, where the helpers below
turn per-device sums into global ones. The strategies (dlx/training/parallel.py) jit or pmap
that one function; none of them rewrites it.

Two settings every supervised task honours through these helpers:
- `trainer.precision=bf16`: `to_compute` casts the params and floating inputs to bfloat16
  inside the step (the master params, the optimizer state, the loss and its reduction stay
  float32; the cast's gradient brings the bf16 gradients back as float32).
- `trainer.grad_accum=N`: `accumulate` sums a per-micro-batch function over N strided
  micro-batches of the batch in one `lax.scan`, so only one micro-batch's activations are
  alive at a time. N=1 calls the function on the whole batch: the program is unchanged.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from dlx.errors import UserError

PRECISIONS = {"fp32": jnp.float32, "bf16": jnp.bfloat16}  # trainer.precision -> compute dtype


class TrainState(flax.struct.PyTreeNode):
    """Everything a step changes. apply_fn/tx are static: they are code, not data.

    `model_state` holds the model's variable collections other than "params" (BatchNorm's
    `batch_stats`): updated by the train step's forward pass, not by the optimizer, and read
    by eval. `extra` holds arrays a task carries from step to step besides params and
    optimizer state (the EWC penalty of a continual run). Both are placed, checkpointed and
    restored with the rest. `tx` is whatever the task's step uses: one optax transformation
    for supervised tasks, a pair for a GAN.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array  # base key; each step folds in its step number (resume-safe dropout)
    extra: Any = flax.struct.field(default_factory=dict)
    model_state: Any = flax.struct.field(default_factory=dict)
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
        model_state: Any = None,
    ) -> TrainState:
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=rng,
            extra={} if extra is None else extra,
            model_state={} if model_state is None else model_state,
            apply_fn=apply_fn,
            tx=tx,
        )


def variables(state: TrainState) -> dict:
    """The model's variables for `module.apply`: params plus the other collections."""
    return {"params": state.params, **state.model_state}


def weights(state: TrainState) -> tuple[Any, Any]:
    """What defines the trained model (a run's best): params and model state."""
    return state.params, state.model_state


def with_weights(state: TrainState, saved: tuple[Any, Any]) -> TrainState:
    """`state` carrying the `weights` of another (the best) state."""
    params, model_state = saved
    return state.replace(params=params, model_state=model_state)


def averaged_model_state(new: Any, n: int, axis: str | None) -> Any:
    """The model state after a step: the mean of the `n` micro-batches' updates (`accumulate`
    sums them; each started from the same state, so for running averages the mean is the
    update by the mean of their batch statistics), and under pmap the mean over devices, so
    every replica keeps the same statistics (under jit the batch axis is already global)."""
    if n > 1:
        new = jax.tree_util.tree_map(lambda x: (x / n).astype(x.dtype), new)
    return new if axis is None else jax.lax.pmean(new, axis)


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


def masked_loss_and_hits(
    logits: jax.Array, labels: jax.Array, smoothing: float = 0.0
) -> tuple[jax.Array, ...]:
    """Per-label cross-entropy and hits, and which labels count (labels < 0 are ignored).

    Works for one label per example (B,) and one per position (B, T) alike. `smoothing` > 0
    (task.label_smoothing, Szegedy et al. 2016): the target is (1 - e) one-hot + e uniform
    over the classes the logits allow (a head mask's ruled-out classes, at NEG, excluded), so
    the loss is (1 - e) CE + e * mean over allowed classes of -log p. 0: plain CE, the same
    program as without it.
    """
    valid = labels >= 0
    safe = jnp.where(valid, labels, 0)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
    if smoothing:
        log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        allowed = logits > -1e8  # NEG (-1e9) marks classes a head mask rules out
        uniform = -jnp.sum(jnp.where(allowed, log_p, 0.0), -1) / allowed.sum(-1)
        loss = (1.0 - smoothing) * loss + smoothing * uniform
    hits = logits.argmax(-1) == safe
    return loss * valid, hits * valid, valid.astype(jnp.float32)


def example_mask(mask: jax.Array, like: jax.Array) -> jax.Array:
    """An eval batch's (B,) real-example mask broadcast over `like`'s per-position axes."""
    return mask.reshape(mask.shape + (1,) * (like.ndim - 1)).astype(jnp.float32)


def to_compute(tree: Any, precision: str) -> Any:
    """`tree`'s floating arrays in the compute dtype of `precision` (fp32: `tree` itself, no
    op added). Integer and bool arrays (token ids, lengths, masks) are left alone."""
    if precision == "fp32":
        return tree
    dtype = PRECISIONS[precision]

    def cast(a: Any) -> Any:
        return a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a

    return jax.tree_util.tree_map(cast, tree)


def micro_batches(batch: Any, n: int) -> Any:
    """The batch's leaves (B, ...) as (n, B/n, ...): micro-batch i holds rows i, i+n, i+2n...

    Strided, not contiguous: under `sharded` each device holds a contiguous block of rows,
    and every micro-batch then takes B/(n*devices) rows from each block, so each device
    computes on its own rows and nothing moves between devices for the split."""

    def split(x: jax.Array) -> jax.Array:
        b = x.shape[0]
        if b % n:
            raise UserError(
                f"a step's batch of {b} rows (per device) cannot be split into "
                f"trainer.grad_accum={n} micro-batches",
                hint="make data.batch_size a multiple of trainer.grad_accum x devices",
            )
        return jnp.swapaxes(x.reshape(b // n, n, *x.shape[1:]), 0, 1)

    return jax.tree_util.tree_map(split, batch)


def accumulate(fn: Any, batch: Any, n: int, rng: jax.Array | None = None) -> Any:
    """The sum over n micro-batches (`micro_batches`) of `fn(micro_batch, key)`, a pytree of
    arrays (gradients, loss terms, metric sums), computed in one `lax.scan`.

    For the sum to be the big batch's value, `fn` must normalise by the whole batch's count
    (computed once, outside), not the micro-batch's: then the summed gradient is the
    gradient of the big batch's mean up to float summation order. Terms that do not depend
    on the batch (a weight penalty) belong outside `fn`, or they would count n times.

    `key` is `fold_in(rng, i)` for micro-batch i: dropout masks differ from the big batch's,
    so runs with dropout are statistically, not bitwise, equal to one big-batch step.
    n == 1: `fn(batch, rng)` itself, the same program as without accumulation.

    Measured on XLA:CPU (benchmarks/grad_accum.py): temp memory falls ~1/n, but the
    gradients of convolutions inside the loop miss XLA:CPU's fast convolution path (the CNN
    recipe's step ~10x slower; the transformer's got faster). Unrolling the loop instead
    kept the speed but gave the memory back (XLA then schedules the micro-batches together).
    Under `sharded`, XLA all-reduces each micro-batch's gradient inside the loop.
    """
    if n == 1:
        return fn(batch, rng)
    micro = micro_batches(batch, n)

    def key(i: jax.Array) -> jax.Array | None:
        return None if rng is None else jax.random.fold_in(rng, i)

    first = jax.tree_util.tree_map(lambda x: x[0], micro)
    shapes = jax.eval_shape(fn, first, key(jnp.zeros((), jnp.int32)))
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def body(total: Any, item: tuple) -> tuple[Any, None]:
        i, part = item
        return jax.tree_util.tree_map(jnp.add, total, fn(part, key(i))), None

    total, _ = jax.lax.scan(body, zeros, (jnp.arange(n), micro))
    return total
