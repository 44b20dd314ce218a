"""Step rate while checkpoints are written, and the work a `kill -9` loses.

Each round is a real `dlx train` process (the user's path: loop, strategy, Orbax), timed by
the run's own steady-state samples/s (summary.json: compile and evals excluded, the saves
inside the timed steps included). Contenders, alternating round by round:

  none   trainer.checkpoint_every_steps=null and no time-based saves: epoch ends only
  every  a `latest` checkpoint every --every steps (Orbax writes in a background thread)

The ratio every/none is the step rate during saves (the issue's bound: >= 0.90).
Work lost after `kill -9` is bounded by the save interval: before this change, by one epoch
(epoch-end checkpoints only); the table prints both for the recipe.

    python benchmarks/checkpoint_async.py [--recipe cnn] [--steps 300] [--every 10] [--rounds 3]

Prints a table and writes benchmarks/results/checkpoint_async_<recipe>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from dlx_side import ROOT, child_env
from report import print_table, write_result


def one_run(recipe: str, steps: int, extra: list[str], out: Path, cache: Path) -> dict:
    argv = [
        sys.executable, "-m", "dlx", "train", f"recipe={recipe}", f"trainer.max_steps={steps}",
        "trainer.progress=none", f"outputs.dir={out}", *extra,
    ]  # fmt: skip
    subprocess.run(argv, env=child_env(DLX_CACHE=str(cache)), check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    (summary,) = out.glob(f"{recipe}/*/summary.json")
    result = json.loads(summary.read_text())
    run = summary.parent
    result["saved"] = sorted(int(p.name) for p in (run / "checkpoints/latest").iterdir()
                             if p.name.isdigit())  # fmt: skip
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="cnn")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    contenders = {
        "none": ["trainer.checkpoint_every_steps=null", "trainer.checkpoint_every_minutes=null"],
        f"every {args.every}": [
            f"trainer.checkpoint_every_steps={args.every}",
            "trainer.checkpoint_every_minutes=null",
            "trainer.keep_checkpoints=2",
        ],
    }
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    last: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        one_run(args.recipe, 5, args.extra, Path(tmp) / "warm", cache)  # fill the compile cache
        for r in range(args.rounds):
            for name, extra in contenders.items():
                res = one_run(args.recipe, args.steps, [*args.extra, *extra],
                              Path(tmp) / f"{r}-{name.replace(' ', '')}", cache)  # fmt: skip
                samples[name].append(res["samples_per_sec"])
                last = res
    med = print_table(samples, "samples/s")
    none, every = med["none"], med[f"every {args.every}"]
    ratio = every / none
    step_s = last["train_time_s"] / max(last["steps"], 1)
    print(f"step rate during saves: {ratio:.3f} of no saves ({len(last['saved'])} kept of "
          f"{args.steps // args.every} written)")  # fmt: skip
    print(f"work lost after kill -9: at most ~{args.every} steps ({args.every * step_s:.1f} s) "
          f"with checkpoint_every_steps={args.every}; epoch-end checkpoints only: up to one "
          f"epoch")  # fmt: skip
    write_result(
        args.out or ROOT / f"benchmarks/results/checkpoint_async_{args.recipe}.json",
        {"recipe": args.recipe, "steps": args.steps, "every": args.every,
         "samples_per_sec": samples, "median": med, "ratio": ratio, "step_s": step_s},
    )  # fmt: skip


if __name__ == "__main__":
    main()
