"""Runs in a subprocess with 8 fake CPU devices (XLA_FLAGS set by the caller): trains the
same tiny recipe under each strategy and dumps final params and per-step losses."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(out: Path, steps: int, strategies: list[str]) -> None:
    import jax

    from dlx.commands.train import train
    from dlx.config import compose
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
    from dlx.restore import load_run
    from dlx.training.loop import evaluate
    from dlx.training.parallel import make_strategy

    run = load_run(report[strategies[0]]["run_dir"], kind="latest")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(29, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 29).astype(np.int32)
    counts = {}
    for name in ("single", "pmap", "sharded"):
        strat = make_strategy(name)
        for bs in (1, 7, 10, 64):
            state = strat.place(run.state)
            counts[f"{name}/{bs}"] = evaluate(run.task, state, {"x": x, "y": y}, bs, strat)["count"]
    (out / "counts.json").write_text(json.dumps(counts))

    # Continual runs go through the same strategies: replay (batches grow by the buffer's
    # examples) and EWC (the penalty rides in the state) under each.
    continual = {}
    for strategy in ("replay", "ewc"):
        for name in strategies:
            overrides = [
                "recipe=continual",
                "data=digits",
                f"continual.strategy={strategy}",
                "continual.tasks=[[0,1],[2,3],[4,5]]",
                "continual.replay_per_batch=32",
                "continual.fisher_samples=64",
                "data.batch_size=32",
                "trainer.max_steps=15",
                "trainer.log_every=1",
                "trainer.progress=none",
                f"parallel={name}",
                f"outputs.dir={out / 'continual' / strategy / name}",
            ]
            run_dir, summary = train(compose(overrides), overrides)
            continual[f"{strategy}/{name}"] = {
                "R": json.loads((run_dir / "continual.json").read_text())["R"],
                "parallel": summary["parallel"],
                "losses": [
                    r["train/loss"]
                    for r in read_metrics(run_dir / "metrics.jsonl")
                    if "train/loss" in r
                ],
            }
    (out / "continual.json").write_text(json.dumps(continual))

    # BatchNorm (model state besides params): sharded computes the global batch's
    # statistics, as one device does; pmap each device's, averaged after every step.
    norm = {}
    for name in strategies:
        overrides = [
            "recipe=digits",
            "model.norm=batch",
            "model.dropout=0.0",
            f"parallel={name}",
            "trainer.max_steps=12",
            "trainer.log_every=1",
            "data.batch_size=64",
            "trainer.progress=none",
            f"outputs.dir={out / 'norm' / name}",
        ]
        run_dir, summary = train(compose(overrides), overrides)
        state = _restore(run_dir)
        norm[name] = {
            "parallel": summary["parallel"],
            "losses": [
                r["train/loss"]
                for r in read_metrics(run_dir / "metrics.jsonl")
                if "train/loss" in r
            ],
            "stats": [np.asarray(a).tolist() for a in jax.tree_util.tree_leaves(state.model_state)],
        }
    (out / "norm.json").write_text(json.dumps(norm))


def _restore(run_dir: Path):
    """The run's latest checkpoint as a single-device state."""
    from dlx.restore import load_run

    return load_run(run_dir, kind="latest").state


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(","))
