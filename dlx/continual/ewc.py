"""Elastic weight consolidation (Kirkpatrick et al. 2017): the diagonal Fisher of each
finished task and the quadratic penalty that keeps important weights near their old values.

Several tasks' penalties fold into one: sum_t F_t (p - p_t)^2 equals
F (p - m)^2 + const with F = sum_t F_t and m = sum_t F_t p_t / F, so the train step
always sees one (fisher, anchor) pair of fixed shapes, however many tasks came before.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

NEG = -1e9  # logit of a class the head mask rules out


@functools.partial(jax.jit, static_argnums=0)
def _fisher_chunk(
    apply_fn: Any,
    params: Any,
    model_state: Any,
    x: jax.Array,
    allowed: jax.Array,
    weight: jax.Array,
    rng: Any,
    start: jax.Array,
) -> Any:
    """Sum over the chunk of weight * (d log p(y|x) / d params)^2, y sampled from the model."""

    def log_prob(p: Any, xi: jax.Array, yi: jax.Array) -> jax.Array:
        logits = apply_fn({"params": p, **model_state}, xi[None], train=False)[0]
        logits = jnp.where(allowed, logits, NEG)
        return jax.nn.log_softmax(logits)[yi]

    logits = apply_fn({"params": params, **model_state}, x, train=False)
    y = jax.random.categorical(jax.random.fold_in(rng, start), jnp.where(allowed, logits, NEG))
    grads = jax.vmap(jax.grad(log_prob), in_axes=(None, 0, 0))(params, x, y)
    return jax.tree_util.tree_map(
        lambda g: jnp.tensordot(weight, jnp.square(g), axes=(0, 0)), grads
    )


def fisher_diagonal(
    apply_fn: Any,
    params: Any,
    x: np.ndarray,
    allowed: np.ndarray,
    rng: jax.Array,
    chunk: int = 32,
    model_state: Any = None,
) -> Any:
    """E_x E_{y ~ p(.|x)} [(d log p(y|x) / d params)^2]: the diagonal of the (true) Fisher,
    estimated with one sampled label per example of `x` (labels from the model, not the data:
    the empirical Fisher is a different, biased quantity). `allowed` (C,) is the task's head
    mask. Returns a tree of params' shapes, every entry >= 0."""
    n = len(x)
    total = None
    for start in range(0, n, chunk):
        xb = x[start : start + chunk]
        weight = np.zeros(chunk, np.float32)
        weight[: len(xb)] = 1.0
        if len(xb) < chunk:  # pad: one compiled shape, padded rows weigh 0
            xb = np.concatenate([xb, np.zeros((chunk - len(xb), *xb.shape[1:]), xb.dtype)])
        part = _fisher_chunk(
            apply_fn, params, model_state or {}, xb, allowed, weight, rng, np.int32(start)
        )
        total = part if total is None else _add(total, part)
    return _scale(total, 1.0 / max(n, 1))


@jax.jit
def _add(a: Any, b: Any) -> Any:
    return jax.tree_util.tree_map(jnp.add, a, b)


@jax.jit
def _scale(a: Any, c: float) -> Any:
    return jax.tree_util.tree_map(lambda v: v * c, a)


@jax.jit
def empty_penalty(params: Any) -> dict:
    """No task consolidated yet: zero Fisher, so the penalty (and its gradient) is 0."""
    return {
        "fisher": jax.tree_util.tree_map(jnp.zeros_like, params),
        "anchor": params,
    }


@jax.jit
def consolidate(penalty: dict, fisher: Any, params: Any) -> dict:
    """Add one finished task (its Fisher at its final params) to the folded penalty."""

    def merge(f_old: jax.Array, m_old: jax.Array, f_new: jax.Array, p: jax.Array) -> tuple:
        f = f_old + f_new
        m = jnp.where(f > 0, (f_old * m_old + f_new * p) / jnp.where(f > 0, f, 1.0), p)
        return f, m

    merged = jax.tree_util.tree_map(merge, penalty["fisher"], penalty["anchor"], fisher, params)
    is_pair = lambda t: isinstance(t, tuple)  # noqa: E731
    return {
        "fisher": jax.tree_util.tree_map(lambda t: t[0], merged, is_leaf=is_pair),
        "anchor": jax.tree_util.tree_map(lambda t: t[1], merged, is_leaf=is_pair),
    }


def penalty_value(penalty: dict, params: Any) -> jax.Array:
    """sum F (p - m)^2 over every parameter (times lambda / 2 in the loss)."""
    terms = jax.tree_util.tree_map(
        lambda f, m, p: jnp.sum(f * jnp.square(p - m)),
        penalty["fisher"],
        penalty["anchor"],
        params,
    )
    return sum(jax.tree_util.tree_leaves(terms))
