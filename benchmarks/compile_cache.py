"""Time to the first train step of `dlx train`, JAX's persistent compilation cache cold vs warm.

A launch is timed from process start to the moment its first train step has completed (the
step-1 log line, `trainer.log_every=1`, which dlx prints once that step's loss is on the host).
Cold: a fresh, empty `$DLX_CACHE/jax`; warm: the cache an earlier launch of the same command
filled. Both see the datasets of your own cache (every other entry of $DLX_CACHE is symlinked
into the fresh one), so only the compile part is cold. Cold and warm alternate (C W C W ...)
and the table shows medians; a bare import of dlx's training stack is timed too, as the floor
no cache removes (benchmarks/trial_overhead.py times a whole short sweep trial instead).

    python benchmarks/compile_cache.py [--recipe cnn] [--rounds 3] [-- KEY=VALUE ...]

Prints a table and writes benchmarks/results/compile_cache.json. Target: warm <= 0.5x cold.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dlx_side import ROOT, child_env
from report import medians, print_table, write_result
from trial_overhead import IMPORTS, timed

FIRST_STEP = re.compile(r"step 1/\d+ \(global 1\)")


def fresh_cache(tmp: Path, name: str) -> Path:
    """An empty cache folder whose datasets are the user's (symlinks), with no jax/ in it."""
    src = Path(os.environ.get("DLX_CACHE", Path.home() / ".cache" / "dlx"))
    cache = tmp / name
    cache.mkdir()
    if src.is_dir():
        for entry in src.iterdir():
            if entry.name != "jax":
                (cache / entry.name).symlink_to(entry.resolve())
    return cache


def launch(argv: list[str], cache: Path) -> dict:
    """Seconds from start to the first completed train step, and to the process's exit."""
    env = child_env(DLX_CACHE=str(cache), PYTHONUNBUFFERED="1")  # unbuffered: lines as they come
    t = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
    )
    first, lines = None, []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if first is None and FIRST_STEP.search(line):
            first = time.perf_counter() - t
    rc = proc.wait()
    if rc != 0 or first is None:
        sys.exit(f"`{' '.join(argv)}` exited {rc} (first step seen: {first}):\n{''.join(lines)}")
    return {"first_step_s": first, "exit_s": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--recipe", default="cnn")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compile_cache.json"))
    ap.add_argument("overrides", nargs="*", help="more `dlx train` overrides (after --)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dlx-compile-cache-"))
    argv = [
        sys.executable,
        "-m",
        "dlx",
        "train",
        f"recipe={args.recipe}",
        "trainer.max_steps=1",
        "trainer.log_every=1",
        "trainer.progress=plain",
        "trainer.checkpoint=false",
        "data.limit_eval=1000",
        f"outputs.dir={tmp / 'runs'}",
        *args.overrides,
    ]
    warm = fresh_cache(tmp, "warm")
    launch(argv, warm)  # fills the warm cache
    entries = sorted(p.name for p in (warm / "jax").glob("*") if p.is_file())
    times: dict[str, list[dict]] = {"cold": [], "warm": []}
    imports: list[float] = []
    for r in range(args.rounds):
        imports.append(timed([sys.executable, "-c", IMPORTS], fresh_cache(tmp, f"i{r}")))
        times["cold"].append(launch(argv, fresh_cache(tmp, f"cold{r}")))
        times["warm"].append(launch(argv, warm))

    print(
        f"`dlx train recipe={args.recipe}` to its first step, {args.rounds} rounds, "
        f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; warm cache: {len(entries)} "
        "compiled programs"
    )
    firsts = {k: [x["first_step_s"] for x in v] for k, v in times.items()}
    med = print_table(firsts, "first step s", label_width=16, digits=2)
    med_exit = medians({k: [x["exit_s"] for x in v] for k, v in times.items()})
    print(f"{'imports only':<16}{statistics.median(imports):>14.2f}")
    print(f"exit (median s): cold {med_exit['cold']:.2f}, warm {med_exit['warm']:.2f}")
    ratio = med["warm"] / med["cold"]
    print(f"ratio warm / cold: {ratio:.2f} (target <= 0.50)")
    write_result(
        args.out,
        {
            "benchmark": "compile_cache",
            "command": argv[1:],
            "rounds": args.rounds,
            "launches": times,
            "imports_s": imports,
            "median_first_step_s": med,
            "median_exit_s": med_exit,
            "ratio_warm_over_cold": ratio,
            "cache_entries": entries,
        },
    )


if __name__ == "__main__":
    main()
