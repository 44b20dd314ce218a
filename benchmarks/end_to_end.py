"""Samples/s of a whole `dlx train` epoch against the pure jitted step on the same batches.

- dlx: the real CLI, `dlx train recipe=... trainer.epochs=1 trainer.progress=plain
  trainer.checkpoint=false` in a fresh process; its summary.json's samples/s. Included: the
  input pipeline (seeded batch order, gathering each batch from the arrays in memory, putting it
  on the devices), the loop's bounded steps in flight, train metrics (logged every
  trainer.log_every steps to metrics.jsonl and the console). Excluded, as dlx excludes them from
  its samples/s: the first step (compilation) and the val eval after the epoch.
- pure: a long-lived worker with the same devices, strategy, model, optimizer and the same
  batches in the same order, already on the devices before the clock starts; it runs only the
  jitted step (blocking every trainer.sync_every steps, which fake CPU devices need; see
  docs/architecture.md).

Rounds alternate (dlx, pure, dlx, pure, ...) so both see the same machine load; the table shows
medians and the ratio dlx / pure. Target: >= 0.95.

    python benchmarks/end_to_end.py [--recipe cnn] [--rounds 3] [-- KEY=VALUE ...]

Prints a table and writes benchmarks/results/end_to_end.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dlx_side import ROOT, child_env, dlx_setup, run_steps, train_batch
from report import print_table, write_result
from vs_pytorch import Worker, serve


def pure_worker(overrides: list[str], n_devices: int, name: str) -> None:
    """Serve rounds of one epoch of the bare jitted step (see the module doc)."""
    from dlx.config import split_recipe

    # The set-up of `dlx train` with the same overrides, on the device count and strategy
    # it chose (the runtime creates exactly n_devices CPU devices).
    recipe, rest = split_recipe(overrides)
    setup = dlx_setup(recipe, [*rest, f"parallel.name={name}", f"parallel.cpu_devices={n_devices}"])
    import jax

    from dlx.data import epoch_batches

    cfg, strategy = setup.cfg, setup.strategy
    batch = int(cfg.data.batch_size)
    state = strategy.place(setup.init_state())
    order = epoch_batches(len(setup.data.x_train), batch, seed=cfg.seed, epoch=1)
    # On the devices before the clock starts: only the jitted step is timed.
    batches = [strategy.batch(train_batch(setup, idx)) for idx in order]
    jax.block_until_ready(batches)

    def run_round() -> float:
        nonlocal state
        t = time.perf_counter()
        state = run_steps(setup, state, batches)
        return len(batches) * batch / (time.perf_counter() - t)

    print(f"pure: {strategy.describe()}, {len(batches)} steps a round", file=sys.stderr)
    serve(run_round)


def dlx_epoch(argv: list[str], out: Path, env: dict[str, str]) -> dict:
    """One `dlx train` epoch in a fresh process: its summary.json and meta.json."""
    before = set(out.glob("*/*/summary.json"))
    subprocess.run(argv, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    (path,) = set(out.glob("*/*/summary.json")) - before
    return {
        "summary": json.loads(path.read_text()),
        "meta": json.loads((path.parent / "meta.json").read_text()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--recipe", default="cnn")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "end_to_end.json"))
    ap.add_argument("overrides", nargs="*", help="more `dlx train` overrides (after --)")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        overrides, n_devices, name = args.worker
        pure_worker(json.loads(overrides), int(n_devices), name)
        return

    tmp = Path(tempfile.mkdtemp(prefix="dlx-end-to-end-"))
    overrides = [
        f"recipe={args.recipe}",
        "trainer.epochs=1",
        "trainer.max_steps=null",
        "trainer.checkpoint=false",
        "data.limit_eval=1000",
        *args.overrides,
    ]
    env = child_env()
    train = [sys.executable, "-m", "dlx", "train", *overrides, "trainer.progress=plain"]
    train.append(f"outputs.dir={tmp}")
    runs: list[dict] = []
    rates: dict[str, list[float]] = {"dlx train epoch": [], "pure jitted step": []}
    pure = None
    for _ in range(args.rounds):
        run = dlx_epoch(train, tmp, env)
        runs.append(run)
        rates["dlx train epoch"].append(run["summary"]["samples_per_sec"])
        if pure is None:  # the devices and strategy dlx train chose
            n = len(run["meta"]["devices"])
            name = run["summary"]["parallel"].split()[0]
            argv = [sys.executable, __file__, "--worker", json.dumps(overrides), str(n), name]
            pure = Worker("pure jitted step", argv, env)
            pure.ask()
        rates["pure jitted step"].append(pure.ask("run")["samples_per_sec"])
    assert pure is not None
    note = pure.stderr().strip().splitlines()[-1:]
    pure.close()

    summary = runs[-1]["summary"]
    print(
        f"recipe {args.recipe}: one epoch of {summary['steps']} steps, {args.rounds} rounds, "
        f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; dlx: {summary['parallel']}"
    )
    med = print_table(rates, "median samples/s")
    ratio = med["dlx train epoch"] / med["pure jitted step"]
    print(f"ratio dlx / pure: {ratio:.3f} (target >= 0.95)   {' '.join(note)}")
    write_result(
        args.out,
        {
            "benchmark": "end_to_end",
            "command": train[1:],
            "rounds": args.rounds,
            "steps": summary["steps"],
            "parallel": summary["parallel"],
            "samples_per_sec": rates,
            "median": med,
            "ratio": ratio,
            "dlx_train_time_s": [r["summary"]["train_time_s"] for r in runs],
        },
    )


if __name__ == "__main__":
    main()
