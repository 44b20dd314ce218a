"""Start-up cost of a tiny run: `dlx train recipe=digits trainer.max_steps=1` against a bare
script that imports jax, flax and optax and runs one jitted Flax step, both with JAX's
persistent compilation cache warm (each has its own, filled by a first untimed run).

The bare script is the floor a JAX trainer cannot go under (interpreter, the three imports,
backend start, one cached compile). What dlx adds on top (config compose, data, the run dir,
loggers, checkpoints, the test eval, plots) is the difference; the issue's bound is
dlx / bare <= 1.5. Runs alternate (B D B D ...) so both see the same machine load; the table
shows medians, min and max.

    python benchmarks/startup.py [--rounds 5]

Prints a table and writes benchmarks/results/startup.json. To see where dlx's time goes:
    python -X importtime -m dlx train recipe=digits trainer.max_steps=1 2> imports.txt
    pyinstrument -m dlx train recipe=digits trainer.max_steps=1   (pip install pyinstrument)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from dlx_side import ROOT, timed
from report import print_table, write_result

# One jitted step of a small Flax CNN on a digits-sized batch, through the persistent cache
# (the same settings dlx's enable_compile_cache uses, so "warm" means the same for both).
BARE = """
import sys
import jax, jax.numpy as jnp, flax.linen as nn, optax
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(16, (3, 3))(x))
        x = nn.relu(nn.Conv(32, (3, 3))(x)).reshape(x.shape[0], -1)
        return nn.Dense(10)(nn.relu(nn.Dense(64)(x)))

net, tx = Net(), optax.adam(3e-3)
x, y = jnp.zeros((64, 8, 8, 1)), jnp.zeros((64,), jnp.int32)
params = net.init(jax.random.PRNGKey(0), x)
opt = tx.init(params)

@jax.jit
def step(params, opt, x, y):
    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean()
    value, grads = jax.value_and_grad(loss)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, value

params, opt, value = step(params, opt, x, y)
print(float(value))
"""


def dlx_args(out: Path) -> list[str]:
    """The issue's command, written to a scratch outputs dir (progress on: what a user sees)."""
    return [
        sys.executable,
        "-m",
        "dlx",
        "train",
        "recipe=digits",
        "trainer.max_steps=1",
        "trainer.progress=plain",
        f"outputs.dir={out}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "startup.json"))
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dlx-startup-"))
    script = tmp / "bare_step.py"
    script.write_text(BARE)
    bare = [sys.executable, str(script), str(tmp / "bare-cache")]
    dlx = dlx_args(tmp / "runs")
    timed(bare, tmp)  # fill both caches: every timed run below is warm
    timed(dlx, tmp / "dlx-cache")
    times: dict[str, list[float]] = {"bare jitted step": [], "dlx train, 1 step": []}
    for _ in range(args.rounds):
        times["bare jitted step"].append(timed(bare, tmp))
        times["dlx train, 1 step"].append(timed(dlx, tmp / "dlx-cache"))
    print(
        f"recipe digits, max_steps=1, warm compile caches, {args.rounds} rounds alternated, "
        f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}"
    )
    med = print_table(times, "median s", label_width=20, digits=2)
    ratio = med["dlx train, 1 step"] / med["bare jitted step"]
    print(f"ratio dlx / bare: {ratio:.2f}  (bound: 1.5)")
    write_result(
        args.out,
        {
            "benchmark": "startup",
            "recipe": "digits",
            "rounds": args.rounds,
            "seconds": times,
            "median": med,
            "ratio_dlx_over_bare": ratio,
        },
    )


if __name__ == "__main__":
    main()
