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
        x = x.reshape(x.shape[0], -1)
        if not jnp.issubdtype(x.dtype, jnp.floating):  # ints in; bf16 stays bf16 (precision)
            x = x.astype(jnp.float32)
        for width in self.features:
            x = nn.relu(nn.Dense(width)(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)
