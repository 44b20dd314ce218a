"""Every continual strategy x scenario over seeds: ACC, BWT, forgetting and wall time, beside
the published rows where there is one. Each run is `dlx train recipe=continual ...` through
the Python API (the same run dirs as the CLI), one after another (no two on the CPU at once).

    python benchmarks/continual.py [--seeds 0 1 2] [--strategies naive replay ...]
        [--scenarios class task] [--recipe continual] [--set KEY=VALUE ...]

Prints a markdown table (mean +- sd over seeds) and writes benchmarks/results/continual.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from report import write_result

STRATEGIES = ("naive", "replay", "ewc", "lwf", "si", "agem", "gdumb")
# Settings a strategy is run with beside the recipe's (before --set): GDumb's memory is the
# k = 4400 of its paper's MNIST rows, and it trains its fresh model for several epochs on it.
STRATEGY_SETTINGS = {
    "gdumb": ["continual.replay_size=4400", "continual.epochs_per_task=10"],
}
# van de Ven & Tolias 2019, "Three scenarios for continual learning", split MNIST (2x400 MLP,
# 2000 iterations a task), ACC in %; None where the paper has no row.
PUBLISHED = {
    ("class", "naive"): 19.90, ("class", "ewc"): 20.01, ("class", "si"): 19.99,
    ("class", "lwf"): 23.85, ("task", "naive"): 87.19, ("task", "ewc"): 98.64,
    ("task", "si"): 99.09, ("task", "lwf"): 99.57,
}  # fmt: skip
# GDumb: Avalanche's reproduction on split MNIST class-IL (continual-learning-baselines), 97%.
PUBLISHED[("class", "gdumb")] = 97.0


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--scenarios", nargs="+", default=["class", "task"])
    parser.add_argument("--recipe", default="continual")
    parser.add_argument("--set", nargs="*", default=[], help="further Hydra overrides")
    parser.add_argument("--out", default="benchmarks/results/continual.json")
    args = parser.parse_args()

    import dlx

    rows, out_dir = [], Path(tempfile.mkdtemp(prefix="dlx-continual-bench-"))
    for scenario in args.scenarios:
        for strategy in args.strategies:
            runs = []
            for seed in args.seeds:
                start = time.perf_counter()
                run = dlx.train(
                    args.recipe,
                    [
                        f"continual.strategy={strategy}",
                        f"continual.scenario={scenario}",
                        f"seed={seed}",
                        f"outputs.dir={out_dir}",
                        "trainer.progress=none",
                        *STRATEGY_SETTINGS.get(strategy, []),
                        *args.set,
                    ],
                )
                s = run.summary
                runs.append(
                    {
                        "seed": seed,
                        "acc": 100 * s["average_accuracy"],
                        "bwt": 100 * s["backward_transfer"],
                        "forgetting": 100 * s["forgetting"],
                        "wall_s": time.perf_counter() - start,
                        "run_dir": str(run.dir),
                    }
                )
            rows.append(
                {
                    "scenario": scenario,
                    "strategy": strategy,
                    "published_acc": PUBLISHED.get((scenario, strategy)),
                    "runs": runs,
                }
            )
            print(f"{scenario}-IL {strategy}: ACC {mean_sd([r['acc'] for r in runs])}", flush=True)
    print("\n| scenario | strategy | ACC % | BWT | forgetting | wall s | published ACC % |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        runs, pub = row["runs"], row["published_acc"]
        cols = [mean_sd([r[k] for r in runs]) for k in ("acc", "bwt", "forgetting", "wall_s")]
        print(
            f"| {row['scenario']}-IL | {row['strategy']} | "
            + " | ".join(cols)
            + f" | {'-' if pub is None else f'{pub:.1f}'} |"
        )
    write_result(args.out, {"recipe": args.recipe, "overrides": args.set, "rows": rows})


if __name__ == "__main__":
    main()
