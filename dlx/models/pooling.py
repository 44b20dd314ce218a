"""Pooling written as reshapes, which XLA:CPU compiles far better than `reduce_window`."""

from __future__ import annotations

import jax.numpy as jnp


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    """2x2 max-pool, stride 2, VALID (an odd last row/column is dropped), NHWC.

    Same values as `flax.linen.max_pool(x, (2, 2), strides=(2, 2))`, but as a reshape and a
    `max` over two axes instead of XLA's reduce_window, whose gradient (select_and_scatter)
    XLA:CPU runs on one thread. Measured on the cnn recipe's step (batch 128, 1 CPU device):
    2.1x samples/s; gradients equal to within 1e-7 (tests/test_pooling.py). Where a window
    holds tied maxima the gradient is shared between them rather than given to one; after a
    ReLU the ties are zeros, whose gradient is zero either way.
    """
    b, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    x = x[:, : 2 * h2, : 2 * w2, :]
    return x.reshape(b, h2, 2, w2, 2, c).max(axis=(2, 4))
