"""Attention weights of every self-attention layer of a Transformer, for one input batch.

Read from what the attention modules `sow("intermediates", "attention_weights", w)`, as
dlx.models.attention.SelfAttention does; for a module that does not, the output of its
attention-weight dropout (the identity at eval time), captured with Flax's
`capture_intermediates` without changing the model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np

SOWN = "attention_weights"


def _is_attention_dropout(module: nn.Module, method: str) -> bool:
    from dlx.models.attention import SelfAttention

    return (
        method == "__call__"
        and isinstance(module, nn.Dropout)
        and isinstance(module.parent, SelfAttention)
    )


def _natural(path: tuple[str, ...]) -> list[Any]:
    """Sort key: Block_2 before Block_10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", "/".join(path))]


def _leaves(tree: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(tree, Mapping):
        return [leaf for k, v in tree.items() for leaf in _leaves(v, (*path, str(k)))]
    return [(path, tree)]


def attention_maps(model: nn.Module, params: Any, x: Any) -> list[np.ndarray]:
    """One (B, heads, T, T) array per layer, in layer order: row q holds the weights query q
    gives to each key (rows sum to 1). Empty if the model has no self-attention."""

    def run(params: Any, x: Any) -> Any:
        return model.apply(
            {"params": params},
            x,
            train=False,
            capture_intermediates=_is_attention_dropout,
            mutable=["intermediates"],
        )[1]

    if not _leaves(jax.eval_shape(run, params, x).get("intermediates", {})):
        return []  # no self-attention: found by tracing shapes only, nothing computed
    # Eager, not jitted: one input, and compiling the whole model costs more than running it.
    state = run(params, x)
    leaves = _leaves(jax.device_get(state.get("intermediates", {})))
    sown = [(p, v) for p, v in leaves if SOWN in p]
    chosen = sown or [(p, v) for p, v in leaves if p and p[-1] == "__call__"]
    maps = []
    for _, value in sorted(chosen, key=lambda pv: _natural(pv[0])):
        w = np.asarray(value[0] if isinstance(value, tuple | list) else value)
        if w.ndim != 4 or w.shape[-1] != w.shape[-2]:
            raise ValueError(f"expected attention weights (B, H, T, T), got shape {w.shape}")
        maps.append(w)
    return maps
