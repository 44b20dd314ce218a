"""Gradient attributions of a classifier's target logit with respect to its input.

- saliency: d logit_target / d x (Simonyan et al. 2014), one gradient per example.
- integrated gradients (Sundararajan et al. 2017): (x - b) * mean over alpha in [0, 1] of the
  gradient at b + alpha (x - b), by the trapezoid rule. Completeness: the attributions of an
  example sum to f(x) - f(b), up to the quadrature error (`completeness` measures it).

`score(x, target) -> (n,)` is the target logit of each example; examples must not interact
(true at eval time: no batch statistics), so the gradient of the sum is each one's gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Score = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


def logit_score(apply_fn: Callable[..., Any], params: Any) -> Score:
    """score(x, target): the logit of class target[i] for example x[i] (model in eval mode)."""

    def score(x: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
        logits = apply_fn({"params": params}, x, train=False)
        return jnp.take_along_axis(logits, target[:, None], axis=-1)[:, 0]

    return score


def predict_with_saliency(
    apply_fn: Callable[..., Any], params: Any, x: Any
) -> tuple[np.ndarray, np.ndarray]:
    """(logits, saliency of the predicted class) in one compiled forward and backward pass."""

    @jax.jit
    def run(params: Any, x: jnp.ndarray) -> tuple:
        def predicted(x: jnp.ndarray) -> tuple:
            logits = apply_fn({"params": params}, x, train=False)
            pred = jnp.argmax(jax.lax.stop_gradient(logits), -1)
            return jnp.take_along_axis(logits, pred[:, None], -1).sum(), logits

        grad, logits = jax.grad(predicted, has_aux=True)(x)
        return logits, grad

    logits, grad = run(params, jnp.asarray(x))
    return np.asarray(logits), np.asarray(grad)


def saliency(score: Score, x: Any, target: Any) -> np.ndarray:
    """The input gradient of each example's target logit: same shape as x."""
    grad = jax.jit(jax.grad(lambda x, t: score(x, t).sum()))
    return np.asarray(grad(jnp.asarray(x), jnp.asarray(target)))


def integrated_gradients(
    score: Score, x: Any, target: Any, baseline: Any, steps: int = 64, chunk: int = 16
) -> np.ndarray:
    """Attributions shaped like x; `baseline` broadcasts to x (e.g. a scalar)."""
    return IntegratedGradients(score, chunk)(x, target, baseline, steps)


class IntegratedGradients:
    """Integrated gradients with one compiled gradient, reused for any number of steps: the
    path's points are evaluated `chunk` at a time (one batch of chunk * n inputs), with the
    trapezoid weights passed in (0 for padding), so more steps never means a new compile."""

    def __init__(self, score: Score, chunk: int = 16) -> None:
        self.chunk = chunk

        def weighted_grads(x, baseline, target, alphas, weights):
            def total(points):
                return (
                    score(points, jnp.tile(target, len(alphas))) * jnp.repeat(weights, len(x))
                ).sum()

            shape = (len(alphas), *([1] * x.ndim))
            points = baseline + alphas.reshape(shape) * (x - baseline)
            return jax.grad(total)(points.reshape(-1, *x.shape[1:]))

        def chunk_sum(x, baseline, target, alphas, weights):
            g = weighted_grads(x, baseline, target, alphas, weights)
            return g.reshape(len(alphas), *x.shape).sum(0)

        self._chunk_sum = jax.jit(chunk_sum)

    def __call__(self, x: Any, target: Any, baseline: Any, steps: int = 64) -> np.ndarray:
        if steps < 1:
            raise ValueError(f"integrated gradients needs steps >= 1, got {steps}")
        x, target = jnp.asarray(x), jnp.asarray(target)
        baseline = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)
        alphas = np.linspace(0.0, 1.0, steps + 1)
        weights = np.full(steps + 1, 1.0 / steps)
        weights[[0, -1]] *= 0.5  # trapezoid rule
        pad = -len(alphas) % self.chunk
        alphas = np.concatenate([alphas, np.zeros(pad)]).astype(x.dtype)
        weights = np.concatenate([weights, np.zeros(pad)]).astype(x.dtype)
        avg = jnp.zeros_like(x)
        for i in range(0, len(alphas), self.chunk):
            sl = slice(i, i + self.chunk)
            avg = avg + self._chunk_sum(x, baseline, target, alphas[sl], weights[sl])
        return np.asarray((x - baseline) * avg)


def completeness(
    score: Score, x: Any, target: Any, baseline: Any, attr: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(sum of each example's attributions, f(x) - f(baseline)): equal for exact IG."""
    x, target = jnp.asarray(x), jnp.asarray(target)
    baseline = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)
    delta = score(x, target) - score(baseline, target)
    return attr.reshape(len(attr), -1).sum(-1), np.asarray(delta)


def per_step(attr: np.ndarray) -> np.ndarray:
    """(n, T, F) attributions -> (n, T): summed over features (sums keep completeness)."""
    return attr.reshape(*attr.shape[:2], -1).sum(-1)
