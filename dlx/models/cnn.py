"""Convolutional image classifiers (NHWC inputs)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from dlx.models.pooling import max_pool_2x2


class CNN(nn.Module):
    """Conv blocks (3x3 conv, ReLU, 2x2 max-pool) then a dense head with dropout."""

    num_classes: int
    features: Sequence[int] = (32, 64)
    dense: int = 128
    dropout: float = 0.3

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        for f in self.features:
            x = nn.relu(nn.Conv(f, (3, 3))(x))
            x = max_pool_2x2(x)
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.dense)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


class CNNSmall(nn.Module):
    """The classic Keras MNIST example: Conv 32 3x3 ReLU, max-pool 2x2, flatten, dense."""

    num_classes: int
    features: int = 32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = nn.relu(nn.Conv(self.features, (3, 3), padding="VALID")(x))
        x = max_pool_2x2(x)
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes)(x)
