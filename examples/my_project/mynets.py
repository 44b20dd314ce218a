"""A small residual CNN: the user's own Flax module, found by `_target_: mynets.SmallResNet`.

dlx passes `num_classes` (from the data) because the module has that field; `width` and
`blocks` come from the recipe's `model:` section.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class ResidualBlock(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        y = nn.relu(nn.Conv(self.width, (3, 3))(x))
        y = nn.Conv(self.width, (3, 3))(y)
        return nn.relu(x + y)


class SmallResNet(nn.Module):
    num_classes: int
    width: int = 32
    blocks: int = 2
    dropout: float = 0.1

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = nn.relu(nn.Conv(self.width, (3, 3))(x))
        for _ in range(self.blocks):
            x = ResidualBlock(self.width)(x)
        x = x.mean(axis=(1, 2))  # global average pool
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)
