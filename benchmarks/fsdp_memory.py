"""Per-device memory of the train state, replicated (`sharded`) against `fsdp`, at 1, 2, 4
and 8 (fake CPU) devices; XLA's compiled memory analysis of the step; step time.

For each model the state (params + optimizer state + step/rng) is placed by each strategy and
its bytes on the busiest device read from the arrays' own shards (`fsdp_layout`). XLA's
`memory_analysis()` of the compiled step adds what one device's program needs: its
arguments (the state shard and the batch slice), outputs, and temporaries (gathered params,
gradients, activations). Each device count runs in its own process (the count is fixed when
JAX starts).

    .venv/bin/python benchmarks/fsdp_memory.py [--devices 1,2,4,8] [--steps 3] [--quick]

Prints a table and writes benchmarks/results/fsdp_memory.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from dlx_side import child_env, dlx_setup, train_batch
from report import write_result

# (label, recipe, overrides): the two recipes as they are, and a transformer 16x the
# recipe's parameters (12.6 M: 145 MiB of fp32 params + AdamW moments).
MODELS = (
    ("cnn", "cnn", ()),
    ("transformer", "transformer", ()),
    ("transformer-512x4", "transformer", ("model.d_model=512", "data.batch_size=16")),
)
STRATEGIES = ("sharded", "fsdp")
MIB = 2**20


def measure(label: str, recipe: str, overrides: list[str], steps: int) -> dict:
    """In this process (its devices): layout bytes, compiled memory and step time of each
    strategy for one model."""
    setup = dlx_setup(recipe, ["schedule=constant", *overrides])
    import jax

    from dlx.data import epoch_batches
    from dlx.training.parallel import fsdp_layout, make_strategy

    batch_size = int(setup.cfg.data.batch_size)
    order = list(epoch_batches(len(setup.data.x_train), batch_size, seed=0, epoch=0))
    first = setup.init_state()
    out: dict = {"model": label, "devices": jax.device_count(), "batch": batch_size}
    out["params"] = sum(x.size for x in jax.tree_util.tree_leaves(first.params))
    for name in STRATEGIES:
        strat = make_strategy(name)
        state = strat.place(first)
        batch = strat.batch(train_batch(setup, order[0]))
        step = strat._fsdp if name == "fsdp" else strat._train
        compiled = step.lower(setup.task, state, batch).compile()
        mem = compiled.memory_analysis()
        row = {**fsdp_layout(state), "describe": strat.describe()}
        if mem is not None:
            for key in ("argument", "output", "temp", "alias"):
                row[f"xla_{key}_bytes"] = int(getattr(mem, f"{key}_size_in_bytes"))
            # One device's peak for the step: what it reads, writes and needs in between;
            # outputs that reuse a donated argument's buffer (alias) are counted once.
            row["xla_peak_bytes"] = (
                row["xla_argument_bytes"]
                + row["xla_output_bytes"]
                + row["xla_temp_bytes"]
                - row["xla_alias_bytes"]
            )
        times = []
        state, m = strat.train_step(setup.task, state, batch)  # the compiled call's first run
        jax.block_until_ready(m["loss"])
        for i in range(steps):
            b = strat.batch(train_batch(setup, order[(i + 1) % len(order)]))
            t = time.perf_counter()
            state, m = strat.train_step(setup.task, state, b)
            jax.block_until_ready((state, m))
            times.append(time.perf_counter() - t)
        row["step_ms"] = 1000 * statistics.median(times)
        out[name] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--devices", default="1,2,4,8")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="the cnn and transformer recipes only")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "fsdp_memory.json"))
    args = ap.parse_args()
    models = MODELS[:2] if args.quick else MODELS
    if args.child is not None:
        label, recipe, overrides = next(m for m in models if m[0] == args.child)
        print(json.dumps(measure(label, recipe, list(overrides), args.steps)))
        return
    results = []
    for label, *_ in models:
        for n in map(int, args.devices.split(",")):
            env = child_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
            cmd = [sys.executable, __file__, "--child", label, "--steps", str(args.steps)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
            if proc.returncode != 0:
                sys.exit(f"{label} on {n} devices failed:\n{proc.stderr[-2000:]}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"  {label} on {n} devices done", file=sys.stderr)
    print_table(results)
    write_result(args.out, {"benchmark": "fsdp_memory", "steps": args.steps, "results": results})


def print_table(results: list[dict]) -> None:
    print(
        "state = params + optimizer state on the busiest device (MiB); xla peak = the compiled "
        "step's argument + output + temp - alias per device (MiB); step = median ms"
    )
    head = f"{'model':<18}{'params':>8}{'dev':>4}"
    for name in STRATEGIES:
        head += f"{name + ' state':>15}{'xla peak':>10}{'step':>8}"
    print(head + f"{'fsdp/repl':>11}")
    for r in results:
        line = f"{r['model']:<18}{r['params'] / 1e6:>7.2f}M{r['devices']:>4}"
        for name in STRATEGIES:
            row = r[name]
            peak = row.get("xla_peak_bytes")
            line += f"{row['per_device_bytes'] / MIB:>15.2f}"
            line += f"{peak / MIB:>10.1f}" if peak is not None else f"{'-':>10}"
            line += f"{row['step_ms']:>8.0f}"
        ratio = r["fsdp"]["per_device_bytes"] / r["sharded"]["per_device_bytes"]
        print(line + f"{ratio:>11.3f}")


if __name__ == "__main__":
    main()
