"""Samples/s of each data-parallel strategy for 1, 2, 4 and 8 (fake CPU) devices.

The device count is fixed when JAX starts, so each count runs in its own subprocess
(XLA_FLAGS=--xla_force_host_platform_device_count=N); inside it the strategies alternate
round by round and the median round is reported. Same model, global batch and data for all.

    .venv/bin/python benchmarks/parallel_scaling.py [--recipe cnn] [--devices 1,2,4,8]

Prints a table and writes benchmarks/results/parallel_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from dlx_side import dlx_setup, run_steps, train_batch
from report import write_result

STRATEGIES = ("single", "pmap", "sharded")


def measure(recipe: str, steps: int, rounds: int) -> dict:
    """In this process: median samples/s of every strategy over this process's devices."""
    # The set-up `dlx train` builds (data, task and model, optimizer); the device count is
    # XLA_FLAGS', which wins over parallel.cpu_devices. Constant lr: no schedule in the way.
    setup = dlx_setup(recipe, ["schedule=constant"])
    import jax

    from dlx.data import epoch_batches
    from dlx.training.parallel import make_strategy

    batch = int(setup.cfg.data.batch_size)
    order = list(epoch_batches(len(setup.data.x_train), batch, seed=0, epoch=0))
    first = setup.init_state()  # one first state, placed by each strategy in turn
    runners = {}
    for name in STRATEGIES:
        # The strategy is what this measures: each over all devices, the rest of the set-up
        # shared (setup.strategy is the recipe's choice, parallel=auto).
        strat = make_strategy(name)
        runners[name] = [replace(setup, strategy=strat), strat.place(first)]

    def run(name: str) -> float:
        sub, state = runners[name]

        def batches():  # put on the devices inside the timing, as the loop does
            for i in range(steps):
                yield sub.strategy.batch(train_batch(setup, order[i % len(order)]))

        t = time.perf_counter()
        runners[name][1] = run_steps(sub, state, batches())
        return steps * batch / (time.perf_counter() - t)

    for name in STRATEGIES:
        run(name)  # compile
    rates = {name: [] for name in STRATEGIES}
    for _ in range(rounds):
        for name in STRATEGIES:
            rates[name].append(run(name))
    return {
        "devices": jax.device_count(),
        "batch": batch,
        "median": {k: statistics.median(v) for k, v in rates.items()},
        "rounds": rates,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--recipe", default="cnn")
    ap.add_argument("--devices", default="1,2,4,8")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "parallel_scaling.json")
    )
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.recipe, args.steps, args.rounds)))
        return
    results = []
    for n in map(int, args.devices.split(",")):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--recipe",
                args.recipe,
                "--steps",
                str(args.steps),
                "--rounds",
                str(args.rounds),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=1800,
        )
        if proc.returncode != 0:
            sys.exit(f"{n} devices failed:\n{proc.stderr[-2000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = results[0]["median"]["single"]
    print(
        f"recipe {args.recipe}, global batch {results[0]['batch']}, {os.cpu_count()} CPU cores, "
        f"median of {args.rounds} rounds x {args.steps} steps (samples/s; x = vs 1 device)"
    )
    print(f"{'devices':>8}" + "".join(f"{s:>18}" for s in STRATEGIES))
    for r in results:
        cells = "".join(
            f"{r['median'][s]:>10.0f} ({r['median'][s] / base:4.2f}x)" for s in STRATEGIES
        )
        print(f"{r['devices']:>8}{cells}")
    write_result(
        args.out,
        {
            "benchmark": "parallel_scaling",
            "recipe": args.recipe,
            "steps_per_round": args.steps,
            "rounds": args.rounds,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
