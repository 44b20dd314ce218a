"""trainer.grad_accum and trainer.precision: what one compiled train step costs.

For the cnn and transformer recipes at a fixed global batch, on one device, with
trainer.grad_accum = 1, 2, 4, 8: XLA's memory analysis of the compiled step (temp bytes: the
activations and other scratch the step needs besides its inputs and outputs; argument
bytes: state + batch), the median step time (settings timed in
alternating rounds, so each sees the same machine load), and the largest |param difference| from
grad_accum=1 after K steps on the same batches (dropout off, so the runs must agree up to
float summation order). Then bf16 vs fp32 step time (on a CPU bf16 is emulated and usually
slower; on accelerators it is the point).

    .venv/bin/python benchmarks/grad_accum.py [--recipes cnn,transformer] [--accum 1,2,4,8]
        [--rounds 8] [--diff-steps 5]

Prints a table and writes benchmarks/results/grad_accum.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from dlx_side import dlx_setup, train_batch
from report import print_table, write_result

from dlx.training.parallel import train_step

# One device, no dropout (the param difference must be float order only), a small slice of
# the data (only a few fixed batches are used).
COMMON = ["parallel=single", "parallel.cpu_devices=1", "model.dropout=0.0"]
EXTRA = {"cnn": ["data.limit_train=2000"], "transformer": []}
MiB = 2**20


def compiled_step(task, state, batch):
    """A fresh jit per setting (its traced program, not an earlier one's)."""
    fresh = jax.jit(lambda t, s, b: train_step(t, s, b), static_argnums=0)
    return fresh.lower(task, state, batch).compile()


def run(step, state, batches):
    for batch in batches:
        state, metrics = step(state, batch)
    jax.block_until_ready(state.params)
    return state, metrics


def max_diff(a, b) -> float:
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return max(float(jnp.abs(x - y).max()) for x, y in pairs)


def bench_recipe(recipe: str, accums: list[int], rounds: int, diff_steps: int) -> dict:
    setup = dlx_setup(recipe, COMMON + EXTRA[recipe])
    batch_size = int(setup.cfg.data.batch_size)
    order = np.random.default_rng(0).permutation(len(setup.data.x_train))
    batches = [
        jax.device_put(train_batch(setup, order[i * batch_size : (i + 1) * batch_size]))
        for i in range(diff_steps)
    ]
    state = setup.init_state()
    tasks = {f"accum={n}": dataclasses.replace(setup.task, grad_accum=n) for n in accums}
    tasks["bf16"] = dataclasses.replace(setup.task, precision="bf16")
    steps, rows, reference = {}, {}, None
    for label, task in tasks.items():
        steps[label] = compiled_step(task, state, batches[0])
        mem = steps[label].memory_analysis()
        trained, metrics = run(steps[label], state, batches)  # also the warm-up
        reference = trained.params if reference is None else reference
        rows[label] = {
            "temp_mib": mem.temp_size_in_bytes / MiB,
            "argument_mib": mem.argument_size_in_bytes / MiB,
            "max_param_diff": max_diff(trained.params, reference),
            "loss": float(metrics["loss"]),
        }
    # Rounds alternate the settings (A B C ... A B C ...): each sees the same machine load.
    times: dict[str, list[float]] = {f"{recipe} {k}": [] for k in steps}
    for _ in range(rounds):
        for label, step in steps.items():
            begin = time.perf_counter()
            run(step, state, batches[:1])
            times[f"{recipe} {label}"].append((time.perf_counter() - begin) * 1e3)
    for label in rows:
        rows[label]["step_ms"] = float(np.median(times[f"{recipe} {label}"]))
    return {"batch_size": batch_size, "settings": rows, "times": times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", default="cnn,transformer")
    ap.add_argument("--accum", default="1,2,4,8")
    ap.add_argument("--rounds", type=int, default=8, help="timed rounds, one step per setting")
    ap.add_argument("--diff-steps", type=int, default=5, help="K: steps before the param diff")
    ap.add_argument("--out", default="benchmarks/results/grad_accum.json")
    args = ap.parse_args()
    accums = [int(a) for a in args.accum.split(",")]
    results, samples = {}, {}
    for recipe in args.recipes.split(","):
        results[recipe] = bench_recipe(recipe, accums, args.rounds, args.diff_steps)
        samples.update(results[recipe].pop("times"))

    cols = ("temp MiB", "args MiB", "step ms", "max |dp|")
    print("\n" + " " * 28 + "".join(f"{c:>11}" for c in cols))
    for recipe, res in results.items():
        for label, row in res["settings"].items():
            name = f"{recipe} b={res['batch_size']} {label}"
            print(
                f"{name:<28}{row['temp_mib']:>11.1f}{row['argument_mib']:>11.1f}"
                f"{row['step_ms']:>11.1f}{row['max_param_diff']:>11.2e}"
            )
    print()
    print_table(samples, "step ms", label_width=28, digits=1)
    write_result(args.out, {"devices": 1, "overrides": COMMON, "results": results})


if __name__ == "__main__":
    main()
