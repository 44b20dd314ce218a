"""Per-trial overhead of a sweep: a `dlx train` process (start, imports, compose, data, XLA
compiles, a few steps, eval, checkpoint) with JAX's persistent compilation cache cold
(a fresh, empty $DLX_CACHE) against warm (the cache a previous trial of the same shapes filled).

Cold and warm runs alternate (C W C W ...) so both see the same machine load; the table shows
medians, and the ratio warm / cold is the share of a short trial's time left once the cache
is warm. A bare `import` of dlx's training stack is timed too, as the floor no cache removes.

    python benchmarks/trial_overhead.py [--rounds 3] [--steps 3]

Prints a table and writes benchmarks/results/trial_overhead.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from dlx_side import ROOT, timed
from report import print_table, write_result

# What a `dlx train` process imports before it composes anything: its command and the loop.
IMPORTS = "import jax, flax, optax, orbax.checkpoint, dlx.commands.train, dlx.training.loop"


def trial_args(steps: int, out: Path) -> list[str]:
    """A sweep trial as short as a real one gets: compile-bound, not compute-bound."""
    return [
        "recipe=digits",
        f"trainer.max_steps={steps}",
        "data.limit_train=512",
        "data.limit_eval=128",
        "trainer.progress=none",
        f"outputs.dir={out}",
    ]


def bookkeeping_s(tmp: Path, trials: int = 20) -> float:
    """Seconds per trial the sweep itself spends (claim, report, tell, rewrite trials.jsonl)
    around a trial that takes no time: what --jobs N and a study add to each trial."""
    import io

    from rich.console import Console

    from dlx.sweep.plan import make_plan
    from dlx.sweep.trial import TrialResult
    from dlx.sweep.worker import execute

    class Instant:
        def run(self, job, slot, report, stop) -> TrialResult:  # type: ignore[no-untyped-def]
            report(1, 0.5)
            return TrialResult("finished", 0.5, step=1)

    values = ",".join(str(i) for i in range(trials))
    plan = make_plan(["recipe=digits", f"outputs.dir={tmp / 'sweep'}", f"seed={values}"])
    t = time.perf_counter()
    execute(plan, ["bench"], runner=Instant(), console=Console(file=io.StringIO()))
    return (time.perf_counter() - t) / trials


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "trial_overhead.json"))
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dlx-trial-overhead-"))
    train = [sys.executable, "-m", "dlx", "train"]
    warm_cache = tmp / "warm"
    timed([*train, *trial_args(args.steps, tmp / "runs")], warm_cache)  # fills the warm cache
    entries = len(list((warm_cache / "jax").glob("*")))
    times: dict[str, list[float]] = {"imports only": [], "trial, cold cache": [], "trial, warm": []}
    for r in range(args.rounds):
        times["imports only"].append(timed([sys.executable, "-c", IMPORTS], tmp / f"i{r}"))
        cold = tmp / f"cold{r}"  # empty: nothing compiled yet
        times["trial, cold cache"].append(
            timed([*train, *trial_args(args.steps, tmp / "runs")], cold)
        )
        times["trial, warm"].append(
            timed([*train, *trial_args(args.steps, tmp / "runs")], warm_cache)
        )

    per_trial = bookkeeping_s(tmp)
    print(
        f"recipe digits, {args.steps} steps, {args.rounds} rounds, {os.cpu_count()} cpus, "
        f"load {os.getloadavg()[0]:.1f}; warm cache: {entries} compiled programs"
    )
    med = print_table(times, "median s", label_width=22, digits=2)
    ratio = med["trial, warm"] / med["trial, cold cache"]
    print(f"{'sweep bookkeeping':<22}{per_trial:>10.3f}  (per trial, set-up and plots included)")
    saved = med["trial, cold cache"] - med["trial, warm"]
    print(f"compile time the cache saves per trial: {saved:.2f} s")
    print(f"ratio warm / cold: {ratio:.2f}  (cold / warm: {1 / ratio:.2f}x)")
    write_result(
        args.out,
        {
            "benchmark": "trial_overhead",
            "recipe": "digits",
            "steps": args.steps,
            "rounds": args.rounds,
            "seconds": times,
            "median": med,
            "saved_s": saved,
            "ratio_warm_over_cold": ratio,
            "cache_entries": entries,
            "sweep_bookkeeping_s_per_trial": per_trial,
        },
    )


if __name__ == "__main__":
    main()
