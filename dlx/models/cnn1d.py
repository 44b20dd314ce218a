"""1-D convolutional classifier for float sequences (B, T, F).

Variable-length sequences (right-padded, ``lengths`` given): each layer computes, for every
sequence, exactly what it computes on that sequence alone at its own length. Steps beyond a
sequence's length are zeroed before every convolution (so a window at the end sees the same
zeros that SAME padding adds to the unpadded sequence), and each sequence gets its own
SAME offset: with stride > 1 the left padding that SAME adds depends on the length
(for stride 2 and kernel 5, 1 step for an even length, 2 for an odd one), so the windows are
shifted per sequence to line up with the unpadded run. The head then reads the real
positions only: ``pool`` mean or max over them; ``pool: flatten`` (fixed positions, the
default) sees exact zeros at every position beyond the end, so the padding content is
ignored but the head's weights for those positions still exist (its input size is fixed by
T); use mean or max for sequences whose lengths really vary.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dlx.models.pooling import length_mask, mask_steps, masked_max, masked_mean

POOLS = ("flatten", "mean", "max")


def _ceil_div(n: jnp.ndarray, s: int) -> jnp.ndarray:
    return (n + s - 1) // s


def _same_low_pad(n: jnp.ndarray, k: int, s: int) -> jnp.ndarray:
    """The left padding SAME adds to a length-n input for kernel k, stride s (as XLA)."""
    total = jnp.maximum((_ceil_div(n, s) - 1) * s + k - n, 0)
    return total // 2


def _conv_at_lengths(
    conv: nn.Conv, x: jnp.ndarray, lengths: jnp.ndarray, k: int, s: int
) -> jnp.ndarray:
    """``conv`` (padding VALID) applied as SAME on each row's first ``lengths`` steps.

    Row b's output j equals SAME's on x[b, :lengths[b]]; outputs past ceil(lengths / s) are
    computed but meaningless (the caller masks them).
    """
    t = x.shape[1]
    t_out = -(-t // s)  # SAME's output length for the padded array
    span = (t_out - 1) * s + k  # input steps that t_out VALID windows read
    left = k - 1  # >= any SAME left padding
    x = mask_steps(x, length_mask(lengths, t))
    x = jnp.pad(x, ((0, 0), (left, max(span - t, 0)), (0, 0)))
    start = left - _same_low_pad(lengths, k, s)
    x = jax.vmap(lambda row, i: jax.lax.dynamic_slice_in_dim(row, i, span, axis=0))(x, start)
    return conv(x)


class CNN1D(nn.Module):
    """Strided conv layers (ReLU), flatten (or a mean/max over positions), dropout, linear head.

    The defaults follow the MNIST-1D paper's CNN (three conv layers of 25 channels, kernels
    5, 3, 3, stride 2), which reports 94% test accuracy.
    """

    num_classes: int
    features: Sequence[int] = (25, 25, 25)
    kernels: Sequence[int] = (5, 3, 3)  # one per conv layer
    stride: int = 2
    dense: int = 0  # > 0: a hidden dense layer before the head
    dropout: float = 0.0
    pool: str = "flatten"  # flatten | mean | max (the last two over real positions)

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, train: bool = False, lengths: jax.Array | None = None
    ) -> jnp.ndarray:
        """x (B, T, F) -> logits (B, num_classes). ``lengths`` (B,): real steps per row (the
        rest is padding and ignored, see the module docstring); clipped to [1, T]."""
        if len(self.kernels) != len(self.features):
            raise ValueError(
                f"model.kernels ({len(self.kernels)}) needs one size per layer of "
                f"model.features ({len(self.features)})"
            )
        if self.pool not in POOLS:
            raise ValueError(f"model.pool must be one of {POOLS}, got {self.pool!r}")
        if lengths is not None:
            lengths = jnp.clip(jnp.asarray(lengths, jnp.int32), 1, x.shape[1])
        for f, k in zip(self.features, self.kernels, strict=True):
            if lengths is None:
                x = nn.relu(nn.Conv(f, (k,), strides=(self.stride,))(x))
            else:
                conv = nn.Conv(f, (k,), strides=(self.stride,), padding="VALID")
                x = nn.relu(_conv_at_lengths(conv, x, lengths, k, self.stride))
                lengths = _ceil_div(lengths, self.stride)
        valid = None if lengths is None else length_mask(lengths, x.shape[1])
        if self.pool == "flatten":
            if valid is not None:
                x = mask_steps(x, valid)
            x = x.reshape(x.shape[0], -1)
        else:
            if valid is None:
                valid = jnp.ones(x.shape[:2], bool)
            x = masked_mean(x, valid) if self.pool == "mean" else masked_max(x, valid)
        if self.dense > 0:
            x = nn.relu(nn.Dense(self.dense)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)
