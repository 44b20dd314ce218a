"""DCGAN-style generator and discriminator (Radford et al. 2015) for small NHWC images.

No BatchNorm: the TrainState carries no batch statistics, so the generator normalises with
LayerNorm (per example: no state, and the same output in training and sampling) and the
discriminator is plain strided convolutions with LeakyReLU(0.2), as the DCGAN paper's first
discriminator layer. Both are sized from the image shape: (H, W, C) with H and W divisible
by 4 (two stride-2 steps).

    generator:     z -> Dense(H/4 * W/4 * 2f) -> LN, ReLU -> reshape (H/4, W/4, 2f)
                   -> ConvT(f, 4x4, /2) -> LN, ReLU -> ConvT(C, 4x4, /2) -> tanh
    discriminator: x -> Conv(f, 4x4, /2) -> LReLU -> Conv(2f, 4x4, /2) -> LReLU
                   -> flatten -> Dense(1) (a logit)
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from dlx.errors import UserError


def check_image_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(H, W, C) of images a DCGAN can make: H and W divisible by 4."""
    if len(shape) != 3:
        raise UserError(
            f"a GAN needs images (H, W, C); this dataset's examples are shaped {tuple(shape)}",
            hint="use image data: data=mnist or data=digits",
        )
    h, w, c = (int(d) for d in shape)
    if h % 4 or w % 4 or h < 4 or w < 4:
        raise UserError(
            f"the DCGAN generator upsamples twice by 2, so image height and width must be "
            f"divisible by 4; got {h}x{w}",
            hint="use 28x28 (data=mnist) or 8x8 (data=digits) images",
        )
    return h, w, c


class Generator(nn.Module):
    image_shape: tuple[int, int, int]  # (H, W, C) of the images made
    features: int = 64  # channels of the last hidden layer (the first has twice as many)
    layer_norm: bool = True

    def _norm(self, x: jnp.ndarray) -> jnp.ndarray:
        return nn.LayerNorm()(x) if self.layer_norm else x

    @nn.compact
    def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
        h, w, c = self.image_shape
        x = nn.Dense(h // 4 * w // 4 * 2 * self.features)(z)
        x = nn.relu(self._norm(x))
        x = x.reshape(z.shape[0], h // 4, w // 4, 2 * self.features)
        x = nn.ConvTranspose(self.features, (4, 4), strides=(2, 2), padding="SAME")(x)
        x = nn.relu(self._norm(x))
        x = nn.ConvTranspose(c, (4, 4), strides=(2, 2), padding="SAME")(x)
        return jnp.tanh(x)


class Discriminator(nn.Module):
    features: int = 64

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = nn.leaky_relu(nn.Conv(self.features, (4, 4), strides=(2, 2))(x), 0.2)
        x = nn.leaky_relu(nn.Conv(2 * self.features, (4, 4), strides=(2, 2))(x), 0.2)
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(1)(x)[:, 0]
