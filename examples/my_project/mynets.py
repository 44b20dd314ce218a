"""A small residual CNN: the user's own Flax module, found by `_target_: mynets.SmallResNet`.

dlx passes `num_classes` (from the data) because the module has that field; `width`,
`blocks` and `norm` come from the recipe's `model:` section. With `norm: true` every conv is
followed by BatchNorm, as in a ResNet: dlx calls the module with `train=True` and its
`batch_stats` collection mutable in train steps, with `train=False` in eval, and keeps the
running statistics in the run's checkpoints beside the params.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class ConvNorm(nn.Module):
    """3x3 conv, then BatchNorm when `norm` (the conv's bias is then the norm's shift)."""

    width: int
    norm: bool

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        x = nn.Conv(self.width, (3, 3), use_bias=not self.norm)(x)
        if self.norm:
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return x


class ResidualBlock(nn.Module):
    width: int
    norm: bool

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        y = nn.relu(ConvNorm(self.width, self.norm)(x, train))
        y = ConvNorm(self.width, self.norm)(y, train)
        return nn.relu(x + y)


class SmallResNet(nn.Module):
    num_classes: int
    width: int = 32
    blocks: int = 2
    dropout: float = 0.1
    norm: bool = True

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = nn.relu(ConvNorm(self.width, self.norm)(x, train))
        for _ in range(self.blocks):
            x = ResidualBlock(self.width, self.norm)(x, train)
        x = x.mean(axis=(1, 2))  # global average pool
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)
