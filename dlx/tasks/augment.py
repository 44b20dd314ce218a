"""Image augmentation inside the jitted train step: `augment.flip`, `augment.crop`,
`augment.cutout`; and at eval time `augment.eval_flip` (the mean of the class probabilities
of each image and its mirror: test-time augmentation, see `Classify.logits`).

Done on the device, per example, from the step's own rng (split off the dropout key), so:
- it costs no host time and no input-pipeline thread, and works the same under every
  strategy and with grad_accum (each micro-batch draws its own);
- a resumed run draws exactly the augmentations the uninterrupted run would have (the rng is
  part of the checkpointed TrainState): resume stays bit-exact;
- evaluation never sees it (eval steps have no rng).

torchvision and Keras transform on the host (a DataLoader worker, a preprocessing layer);
big_vision and the Flax examples run `tf.image` ops in the tf.data pipeline. Here there is no
pipeline to run them in, and 28x28-to-32x32 images are a few hundred KB a batch: the device
does it in microseconds. Inputs are NHWC float (already standardised), labels unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from dlx.errors import UserError


@dataclass(frozen=True)
class Augment:
    flip: bool = False  # mirror left-right with probability 1/2 (not for digits or text)
    crop: int = 0  # pad k pixels on each side (edge values), crop back at a random offset
    cutout: int = 0  # zero (= the mean, after standardising) a random s x s square
    # Test-time augmentation: evaluation (val, test, dlx eval, dlx.load) scores the mean of
    # the class probabilities of each image and its mirror.
    eval_flip: bool = False

    def __bool__(self) -> bool:
        """Any train-time augmentation? (Off: the train step's program is unchanged.)"""
        return bool(self.flip or self.crop or self.cutout)

    @property
    def active(self) -> bool:
        """Any augmentation at all, at train or at eval time."""
        return bool(self) or self.eval_flip

    def check(self, input_shape: tuple[int, ...]) -> None:
        """Refuse settings that cannot apply to these examples, before anything compiles."""
        if not self.active:
            return
        if len(input_shape) != 3:
            raise UserError(
                f"augment.* works on images (height, width, channels), but this data's "
                f"examples are {tuple(input_shape)}",
                hint="drop the augment.* overrides for this dataset",
            )
        h, w, _ = input_shape
        if self.cutout > min(h, w):
            raise UserError(
                f"augment.cutout={self.cutout} is larger than the {h}x{w} images",
                hint=f"e.g. augment.cutout={max(1, min(h, w) // 3)}",
            )

    def __call__(self, x: jax.Array, rng: Any) -> jax.Array:
        n, h, w, c = x.shape
        k_flip, k_crop, k_cut = jax.random.split(rng, 3)
        if self.flip:
            mirror = jax.random.bernoulli(k_flip, 0.5, (n, 1, 1, 1))
            x = jnp.where(mirror, x[:, :, ::-1, :], x)
        if self.crop:
            k = self.crop
            padded = jnp.pad(x, ((0, 0), (k, k), (k, k), (0, 0)), mode="edge")
            offsets = jax.random.randint(k_crop, (n, 2), 0, 2 * k + 1)
            x = jax.vmap(lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c)))(
                padded, offsets
            )
        if self.cutout:
            half = self.cutout / 2
            size = jnp.array([h, w], jnp.float32)[None, :, None, None]
            centre = jax.random.uniform(k_cut, (n, 2, 1, 1)) * size
            rows = jnp.arange(h)[None, :, None] + 0.5
            cols = jnp.arange(w)[None, None, :] + 0.5
            inside = (jnp.abs(rows - centre[:, 0]) < half) & (jnp.abs(cols - centre[:, 1]) < half)
            x = jnp.where(inside[..., None], jnp.zeros((), x.dtype), x)
        return x


def augment_from(cfg: Any) -> Augment:
    """The `augment:` section of a config (absent in run dirs from before it existed)."""
    section = cfg.get("augment") or {}
    return Augment(
        flip=bool(section.get("flip", False)),
        crop=int(section.get("crop", 0)),
        cutout=int(section.get("cutout", 0)),
        eval_flip=bool(section.get("eval_flip", False)),
    )
