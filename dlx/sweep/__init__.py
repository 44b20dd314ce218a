"""Hyperparameter sweeps: grid, random or Optuna TPE over Hydra overrides, one `dlx train`
process per trial, resumable and shared between workers through one Optuna study.

    dlx sweep recipe=digits optim.lr=1e-3,3e-3 model.dense=32,64 --jobs 2
"""

from dlx.sweep.worker import run_sweep

__all__ = ["run_sweep"]
