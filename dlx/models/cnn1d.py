"""1-D convolutional classifier for float sequences (B, T, F)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp


class CNN1D(nn.Module):
    """Strided conv layers (ReLU), flatten, dropout, linear head.

    The defaults follow the MNIST-1D paper's CNN (three conv layers of 25 channels, kernels
    5, 3, 3, stride 2), which reports 94% test accuracy.
    """

    num_classes: int
    features: Sequence[int] = (25, 25, 25)
    kernels: Sequence[int] = (5, 3, 3)  # one per conv layer
    stride: int = 2
    dense: int = 0  # > 0: a hidden dense layer before the head
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if len(self.kernels) != len(self.features):
            raise ValueError(
                f"model.kernels ({len(self.kernels)}) needs one size per layer of "
                f"model.features ({len(self.features)})"
            )
        for f, k in zip(self.features, self.kernels, strict=True):
            x = nn.relu(nn.Conv(f, (k,), strides=(self.stride,))(x))
        x = x.reshape(x.shape[0], -1)
        if self.dense > 0:
            x = nn.relu(nn.Dense(self.dense)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)
