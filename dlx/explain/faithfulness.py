"""Deletion and insertion curves (Petsiuk et al. 2018) of an attribution map, and their AUC.

Pixels (or patch x patch squares, by their mean) are ranked by the map (most important
first; ties in random order). Deletion sets the
top k% to the baseline (0: the mean of standardised data) and follows the model's probability
of the explained class as k goes 0 -> 100%; insertion starts from the baseline image and puts
the top k% back. A faithful map makes deletion fall fast (low AUC) and insertion rise fast
(high AUC). The same curves for random rankings, averaged over a few seeds, are the reference:
a method is as good as its distance from random.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Logits = Callable[[jnp.ndarray], jnp.ndarray]  # x -> logits (n, classes)


@dataclass
class Curves:
    fractions: np.ndarray  # (steps + 1,) fraction of pixels removed / inserted
    prob: np.ndarray  # (steps + 1,) mean probability of the explained class
    accuracy: np.ndarray  # (steps + 1,) accuracy against the true labels

    @property
    def auc(self) -> float:
        return float(np.trapezoid(self.prob, self.fractions))

    @property
    def accuracy_auc(self) -> float:
        return float(np.trapezoid(self.accuracy, self.fractions))


def pixel_ranks(importance: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n, H, W) importance -> (n, H*W) rank of each pixel (0 = most important). Ties are
    broken in a random order (a flat Grad-CAM region must not be removed in raster order)."""
    flat = importance.reshape(len(importance), -1)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(flat.shape[1])
    order = perm[np.argsort(-flat[:, perm], axis=1, kind="stable")]
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None].repeat(len(flat), 0), axis=1)
    return ranks


def random_ranks(n: int, pixels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + seed)
    return np.stack([rng.permutation(pixels) for _ in range(n)])


def patch_ranks(importance: np.ndarray, patch: int, seed: int = 0) -> np.ndarray:
    """(n, H, W) -> (n, H*W): each pixel gets the rank of its patch x patch square (ranked by
    the square's mean importance), so whole squares are removed together. H and W must be
    multiples of patch; patch 1 is pixel_ranks."""
    if patch == 1:
        return pixel_ranks(importance, seed)
    n, h, w = importance.shape
    pooled = importance.reshape(n, h // patch, patch, w // patch, patch).mean((2, 4))
    return expand(pixel_ranks(pooled, seed).reshape(n, h // patch, w // patch), patch)


def expand(unit_ranks: np.ndarray, patch: int) -> np.ndarray:
    """(n, h, w) ranks of squares -> (n, h*patch * w*patch) ranks of their pixels."""
    big = unit_ranks.repeat(patch, axis=1).repeat(patch, axis=2)
    return big.reshape(len(big), -1)


class Faithfulness:
    """Deletion/insertion curves for one model: one compiled program per step, reused for
    every method and random seed."""

    def __init__(
        self, logits: Logits, steps: int = 20, baseline: float = 0.0, patch: int = 1
    ) -> None:
        self.steps = steps
        self.baseline = baseline
        self.patch = patch  # the unit removed: a pixel, or a patch x patch square

        @jax.jit
        def probe(x, ranks, target, y, count, insert):
            keep = (ranks < count).reshape(*x.shape[:3], 1)  # the top `count` pixels
            removed = jnp.where(keep, baseline, x)
            inserted = jnp.where(keep, x, baseline)
            logits_ = logits(jnp.where(insert, inserted, removed))
            prob = jax.nn.softmax(logits_.astype(jnp.float32), -1)
            p = jnp.take_along_axis(prob, target[:, None], -1)[:, 0]
            return p.mean(), (logits_.argmax(-1) == y).mean()

        self._probe = probe

    def counts(self, pixels: int) -> np.ndarray:
        return np.round(np.linspace(0, pixels, self.steps + 1)).astype(np.int32)

    def curves(self, x: Any, ranks: np.ndarray, target: Any, y: Any, insert: bool) -> Curves:
        x, ranks = jnp.asarray(x), jnp.asarray(ranks)
        target, y = jnp.asarray(target), jnp.asarray(y)
        pixels = ranks.shape[1] // self.patch**2  # units: pixels or squares
        counts = self.counts(pixels)
        out = [self._probe(x, ranks, target, y, int(c), insert) for c in counts]
        prob, acc = (np.array([float(o[i]) for o in out]) for i in range(2))
        return Curves(counts / pixels, prob, acc)

    def both(self, x: Any, ranks: np.ndarray, target: Any, y: Any) -> dict[str, Curves]:
        return {
            "deletion": self.curves(x, ranks, target, y, insert=False),
            "insertion": self.curves(x, ranks, target, y, insert=True),
        }

    def random(self, x: Any, target: Any, y: Any, seeds: int = 3) -> dict[str, Curves]:
        """The curves of random rankings, averaged over `seeds` seeds."""
        n, (h, w) = len(x), np.shape(x)[1:3]
        units = (h // self.patch, w // self.patch)

        def ranks(s: int) -> np.ndarray:
            r = random_ranks(n, units[0] * units[1], s)
            return expand(r.reshape(n, *units), self.patch) if self.patch > 1 else r

        runs = [self.both(x, ranks(s), target, y) for s in range(seeds)]
        return {
            mode: Curves(
                runs[0][mode].fractions,
                np.mean([r[mode].prob for r in runs], 0),
                np.mean([r[mode].accuracy for r in runs], 0),
            )
            for mode in ("deletion", "insertion")
        }
