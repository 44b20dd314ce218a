"""The model-randomisation sanity check (Adebayo et al. 2018, "Sanity checks for saliency maps").

A map that explains the model must change when the model's weights are replaced by random
ones. The weights are re-initialised with the model's own initialisers (`model.init`), either
all layers at once or cascading from the output layer down (`cascade_params`), and the
Spearman rank correlation between each example's trained-model map and random-model map is
measured over its pixels: near 0 means the method depends on the weights (it passes); near 1
means it would draw the same map for any model (an edge detector, not an explanation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def random_params(model: Any, params: Any, x: Any, seed: int = 1) -> Any:
    """Freshly initialised params of the same structure as `params` (every layer random)."""
    fresh = jax.jit(lambda r, x: model.init(r, x))(jax.random.PRNGKey(seed), jnp.asarray(x[:1]))
    fresh = fresh["params"]
    if jax.tree.structure(fresh) != jax.tree.structure(params):
        raise ValueError("re-initialised params do not have the trained params' structure")
    return fresh


def cascade_params(params: Mapping, fresh: Mapping) -> list[tuple[str, Any]]:
    """(name, params) with the top-level layers randomised one more at a time, from the last
    (the output) to the first; the last entry is every layer random."""
    names = list(params)
    stages = []
    for k in range(1, len(names) + 1):
        random = set(names[-k:])
        stages.append(
            (
                f"{names[-k]}+" if k < len(names) else "all layers",
                {n: fresh[n] if n in random else params[n] for n in names},
            )
        )
    return stages


def rankdata(a: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties share their mean rank) along the last axis, as
    scipy.stats.rankdata(method="average")."""
    a = np.asarray(a)
    flat = a.reshape(-1, a.shape[-1])
    out = np.empty(flat.shape, np.float64)
    for i, row in enumerate(flat):
        order = np.argsort(row, kind="mergesort")
        inv = np.empty_like(order)
        inv[order] = np.arange(len(row))
        s = row[order]
        first = np.r_[True, s[1:] != s[:-1]]
        dense = np.cumsum(first)[inv]
        bounds = np.r_[np.nonzero(first)[0], len(row)]
        out[i] = 0.5 * (bounds[dense] + bounds[dense - 1] + 1)
    return out.reshape(a.shape)


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per example (first axis): the Spearman rank correlation of two maps over their pixels.
    A constant map (no ranking at all) gives 0."""
    ra = rankdata(np.asarray(a).reshape(len(a), -1))
    rb = rankdata(np.asarray(b).reshape(len(b), -1))
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    return np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1.0), 0.0)
