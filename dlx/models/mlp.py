"""A plain multi-layer perceptron for tables, flat vectors or (flattened) images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
    """Flatten, then Dense + ReLU + dropout per hidden size, then a Dense head."""

    num_classes: int
    features: Sequence[int] = (256, 128)  # hidden layer sizes
    dropout: float = 0.1

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, lengths: Any = None) -> jnp.ndarray:
        # `lengths` (padded sequences) is accepted and unused: padding is zeros in the input.
        x = x.reshape(x.shape[0], -1).astype(jnp.float32)
        for width in self.features:
            x = nn.relu(nn.Dense(width)(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


class ConvNorm(nn.Module):
    """Conv blocks (3x3 conv, GroupNorm, ReLU, 2x2 max-pool, dropout), then a dense head.

    `cnn` with a normalisation layer and dropout after every block: what lifts a two-block
    CNN past 93% on Fashion-MNIST at the same cost. GroupNorm, not BatchNorm, so the model
    keeps no running statistics (train and eval see the same function of each example).
    """

    num_classes: int
    features: Sequence[int] = (32, 64)
    dense: int = 256
    groups: int = 8  # GroupNorm groups (each block's width must be a multiple); 0: no norm
    conv_dropout: float = 0.1  # after each block
    dropout: float = 0.4  # before the head

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        from dlx.models.pooling import max_pool_2x2

        for f in self.features:
            x = nn.Conv(f, (3, 3), use_bias=self.groups == 0)(x)
            if self.groups:
                x = nn.GroupNorm(num_groups=self.groups)(x)
            x = max_pool_2x2(nn.relu(x))
            x = nn.Dropout(self.conv_dropout, deterministic=not train)(x)
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.dense)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)
