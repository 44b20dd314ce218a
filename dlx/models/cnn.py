"""Convolutional image classifiers (NHWC inputs)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from dlx.models.pooling import max_pool_2x2

NORMS = ("none", "batch")


class CNN(nn.Module):
    """Conv blocks (3x3 conv, [BatchNorm,] ReLU, 2x2 max-pool) then a dense head with dropout.

    `norm="batch"`: BatchNorm after each conv (its bias then dropped: the norm's shift does
    its work). Train steps normalise with the batch's statistics and update the running
    averages (the run's `model_state`); eval uses the averages. Under `sharded` the batch
    statistics are the global batch's; under `pmap` each device's, averaged after the step.
    """

    num_classes: int
    features: Sequence[int] = (32, 64)
    dense: int = 128
    dropout: float = 0.3
    norm: str = "none"
    momentum: float = 0.9  # of BatchNorm's running averages (flax's default 0.99 is slow for
    # runs of a few thousand steps: eval would see statistics of the first weights)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if self.norm not in NORMS:
            raise ValueError(f"model.norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        for f in self.features:
            if self.norm == "batch":
                x = nn.Conv(f, (3, 3), use_bias=False)(x)
                x = nn.BatchNorm(use_running_average=not train, momentum=self.momentum)(x)
            else:
                x = nn.Conv(f, (3, 3))(x)
            x = max_pool_2x2(nn.relu(x))
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
