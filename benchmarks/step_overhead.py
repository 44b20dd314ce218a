"""dlx's training loop against a hand-written jitted Flax loop: same model, batch and data.

Alternates the two (A B A B ...) so both see the same machine load, times each round from
outside, and reports medians and the ratio. dlx's round is its real `train_loop` (seeded
batching, periodic syncs, metric logging to metrics.jsonl, a tiny val pass at the end);
the hand-written round is the minimal loop a user would write.

    .venv/bin/python benchmarks/step_overhead.py [--recipe cnn] [--steps 200] [--rounds 5]

Prints a table and writes benchmarks/results/step_overhead.json. Target: dlx >= 0.95x.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import optax
from dlx_side import dlx_setup
from report import print_table, write_result

from dlx.setup import check_batches
from dlx.track.console import RunConsole
from dlx.track.metrics import MetricsWriter
from dlx.training.fit import StandardFit
from dlx.training.loop import LoopIO, train_loop


def hand_written(model, params, lr: float, x: np.ndarray, y: np.ndarray, steps: int, batch: int):
    """What a user writes by hand: jit(value_and_grad) + optax, numpy batches."""
    tx = optax.adam(lr)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, xb, yb, rng):
        def loss_fn(p):
            logits = model.apply({"params": p}, xb, train=True, rngs={"dropout": rng})
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    key = jax.random.PRNGKey(0)
    order = np.random.default_rng(0).permutation(len(x))

    def run(params, opt_state, epoch: int):
        for i in range(steps):
            idx = order[(i * batch) % (len(x) - batch) :][:batch]
            params, opt_state, loss = step(
                params, opt_state, x[idx], y[idx], jax.random.fold_in(key, i + epoch * steps)
            )
        loss.block_until_ready()
        return params, opt_state

    return run, opt_state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--recipe", default="cnn")
    # 200: a round restarts the loop (one sync) and ends in a val pass, fixed costs that a
    # real epoch (429 steps) amortises; at 100 steps they weigh 2-4% on the cnn recipe.
    ap.add_argument("--steps", type=int, default=200, help="train steps per timed round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--eval-examples",
        type=int,
        default=100,
        help="val examples dlx evaluates at the end of each round (its loop always does)",
    )
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "step_overhead.json"))
    args = ap.parse_args()

    # The set-up `dlx train` builds. One device for both (parallel=single, so the runtime
    # creates no extra CPU devices either): this measures the loop's overhead, not the split.
    setup = dlx_setup(
        args.recipe,
        [
            f"trainer.max_steps={args.steps}",
            "trainer.progress=none",
            "trainer.checkpoint=false",
            f"data.limit_eval={args.eval_examples}",
            "schedule=constant",
            "parallel=single",
        ],
    )
    cfg, data, strategy = setup.cfg, setup.data, setup.strategy
    batch = int(cfg.data.batch_size)
    check_batches(setup, batch)
    # The same first state for both: the task's init (params and dropout key from cfg.seed).
    state = setup.init_state()
    hand_params = jax.tree_util.tree_map(np.array, state.params)  # host copies: dlx may donate
    hand_run, hand_opt = hand_written(
        setup.task.model, hand_params, cfg.optim.lr, data.x_train, data.y_train, args.steps, batch
    )
    state = strategy.place(state)
    # What `dlx train` runs for a standard run (StandardFit.run): the fit's Phase through
    # train_loop, here reporting to a quiet console and a metrics.jsonl in a temp folder
    # (no checkpoints, as trainer.checkpoint=false; no run dir, so no epoch_end files).
    fit = StandardFit()
    phase = fit.phase(setup)
    tmp = Path(tempfile.mkdtemp())
    console = RunConsole("none")

    def dlx_round(state):
        metrics = MetricsWriter(tmp / "metrics.jsonl")
        io = LoopIO(console=console, metrics=metrics)
        result = train_loop(cfg.trainer, phase, setup.task, state, strategy, io)
        metrics.close()
        return result.state

    # Warm-up: compile both, outside the timing.
    state = dlx_round(state)
    hand_params, hand_opt = hand_run(hand_params, hand_opt, 0)
    rates: dict[str, list[float]] = {"dlx": [], "hand-written": []}
    for r in range(args.rounds):
        t = time.perf_counter()
        state = dlx_round(state)
        rates["dlx"].append(args.steps * batch / (time.perf_counter() - t))
        t = time.perf_counter()
        hand_params, hand_opt = hand_run(hand_params, hand_opt, r + 1)
        rates["hand-written"].append(args.steps * batch / (time.perf_counter() - t))

    print(
        f"recipe {args.recipe}, batch {batch}, {args.steps} steps x {args.rounds} rounds, "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s)"
    )
    med = print_table(rates, "median samples/s", label_width=14)
    ratio = med["dlx"] / med["hand-written"]
    print(f"ratio dlx / hand-written: {ratio:.3f} (target >= 0.95)")
    write_result(
        args.out,
        {
            "benchmark": "step_overhead",
            "recipe": args.recipe,
            "batch": batch,
            "steps_per_round": args.steps,
            "rounds": args.rounds,
            "samples_per_sec": rates,
            "median": med,
            "ratio": ratio,
            "devices": [str(d) for d in jax.devices()],
        },
    )


if __name__ == "__main__":
    main()
