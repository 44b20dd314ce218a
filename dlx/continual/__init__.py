"""Continual learning: one model trained on a stream of tasks (split or permuted datasets)
with naive fine-tuning, replay or EWC, and the accuracy matrix R with ACC, BWT, forgetting.

`dlx train` runs a config with a `continual` section through `fit.StreamFit`
(recipes/continual*.yaml). Importing this package imports no jax.
"""
