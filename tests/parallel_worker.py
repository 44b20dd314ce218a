"""Runs in a subprocess with 8 fake CPU devices (XLA_FLAGS set by the caller): trains the
same tiny recipe under each strategy and dumps final params and per-step losses."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(out: Path, steps: int, strategies: list[str]) -> None:
    import jax

    from dlx.config import compose
    from dlx.run import train
    from dlx.track.metrics import read_metrics

    assert jax.device_count() == 8, jax.devices()
    report = {}
    for name in strategies:
        overrides = [
            "recipe=digits",
            f"parallel={name}",
            f"trainer.max_steps={steps}",
            "trainer.log_every=1",
            "data.batch_size=64",
            "model.dropout=0.0",
            "trainer.progress=none",
            f"outputs.dir={out / name}",
        ]
        run_dir, _ = train(compose(overrides), overrides)
        records = read_metrics(run_dir / "metrics.jsonl")
        report[name] = {
            "run_dir": str(run_dir),
            "losses": [r["train/loss"] for r in records if "train/loss" in r],
            "test": json.loads((run_dir / "summary.json").read_text())["test"],
        }
    (out / "report.json").write_text(json.dumps(report))

    # Eval counts every example exactly once whatever the device count and batch size.
    from dlx.train.loop import evaluate
    from dlx.train.parallel import make_strategy

    from_ckpt = _restore(Path(report[strategies[0]]["run_dir"]))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(29, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 29).astype(np.int32)
    counts = {}
    for name in ("single", "pmap", "sharded"):
        strat = make_strategy(name)
        for bs in (1, 7, 10, 64):
            counts[f"{name}/{bs}"] = evaluate(strat.place(from_ckpt), x, y, bs, strat)["count"]
    (out / "counts.json").write_text(json.dumps(counts))


def _restore(run_dir: Path):
    """The run's latest checkpoint into a fresh single-device state."""
    import jax
    import jax.numpy as jnp
    from omegaconf import OmegaConf

    from dlx.checkpoint import RunCheckpoints
    from dlx.models import build_model
    from dlx.train.optim import make_optimizer
    from dlx.train.step import TrainState

    cfg = OmegaConf.load(run_dir / "config.yaml")
    model = build_model(OmegaConf.to_container(cfg.model), 10)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))["params"]
    tx, _ = make_optimizer(cfg.optim, cfg.schedule, 10)
    template = TrainState.create(model.apply, params, tx, jax.random.PRNGKey(0))
    state, _ = RunCheckpoints(run_dir / "checkpoints", create=False).restore(template, "latest")
    return state


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(","))
