"""Continual learning: one model trained on a stream of tasks (split or permuted datasets)
with naive fine-tuning, replay or EWC, and the accuracy matrix R with ACC, BWT, forgetting.

`run_continual(cfg, overrides)` is the entry `dlx train` uses when `cfg.continual` is set
(recipes/continual*.yaml). Importing this package imports no jax.
"""

from __future__ import annotations

from dlx.continual.run import run_continual

__all__ = ["run_continual"]
