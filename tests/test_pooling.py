"""max_pool_2x2 against flax's reduce_window max-pool: values, odd sizes, gradients."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlx.models.pooling import max_pool_2x2


def flax_pool(x: jnp.ndarray) -> jnp.ndarray:
    return nn.max_pool(x, (2, 2), strides=(2, 2))


@pytest.mark.parametrize("shape", [(3, 28, 28, 4), (2, 13, 13, 3), (1, 7, 10, 2), (2, 1, 5, 1)])
def test_values_match_flax_max_pool(shape: tuple[int, ...]) -> None:
    x = jax.random.normal(jax.random.key(0), shape)
    ours, theirs = max_pool_2x2(x), flax_pool(x)
    assert ours.shape == theirs.shape == (shape[0], shape[1] // 2, shape[2] // 2, shape[3])
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_gradient_matches_flax_max_pool_after_relu() -> None:
    # As in the CNN: pooling a ReLU, so windows hold tied zeros; their gradient must stay 0.
    x = jax.random.normal(jax.random.key(1), (4, 14, 15, 8))
    w = jax.random.normal(jax.random.key(2), (4, 7, 7, 8))

    def loss(pool, x):  # type: ignore[no-untyped-def]
        return jnp.sum(pool(jax.nn.relu(x)) * w)

    ours = jax.grad(lambda x: loss(max_pool_2x2, x))(x)
    theirs = jax.grad(lambda x: loss(flax_pool, x))(x)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-7)
    assert float(jnp.abs(ours).sum()) > 0  # the test compares real, non-zero gradients
