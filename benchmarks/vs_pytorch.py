"""dlx's CNN train step against PyTorch eager: same model, batch, optimizer and data, one run.

Model (recipe cnn): conv3x3 SAME 32, ReLU, max-pool 2 -> conv3x3 SAME 64, ReLU, max-pool 2 ->
dense 128, ReLU, dropout 0.3 -> dense 10; Adam; batch 128; MNIST batches held in memory.

Every contender is a long-lived worker process that compiles / warms up once, then runs one
timed round (STEPS optimizer steps over the same batches, ending in a sync) each time it is
asked. Rounds alternate between workers (A B C A B C ...) so all see the same machine load;
the table shows medians and the ratio to PyTorch eager, over all rounds and over the quiet
ones (other processes used < QUIET cores while it ran, read from /proc): on a shared machine
PyTorch's threads slow down far more under contention than XLA's.

- dlx workers run this script in dlx's interpreter and train exactly as `dlx train` would:
  the set-up `dlx.setup.build` makes of the composed recipe (the runtime first: CPU device
  count and XLA flags; then the task with its model, the optimizer, the first state), its
  Strategy (place, batch, train_step) and the loop's bounded steps in flight. Each `--dlx`
  adds one: `NAME:ARGS`, ARGS space-separated Hydra overrides and `ENV=value` settings, e.g.
  `--dlx "1dev:parallel=single"`,
  `--dlx "ynn-off:XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type="`.
- PyTorch workers run in a separate interpreter: PyTorch is not a dlx dependency. Create it
  once (2.13.0 is the version measured; the CPU wheel):

      python3.11 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy

  and pass `--torch-python /tmp/torchvenv/bin/python` (or set DLX_TORCH_PYTHON). The torch step
  is the minimal one a user writes (zero_grad, forward, cross-entropy, backward, Adam step);
  `channels_last` also converts model and input to torch.channels_last.

    python benchmarks/vs_pytorch.py [--steps 40] [--rounds 7] [--dlx NAME:ARGS ...]

Prints a table and writes benchmarks/results/vs_pytorch.json. Target: dlx >= 1.0x PyTorch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dlx_side import ROOT, child_env, dlx_setup, run_steps
from report import medians, write_result

TORCH_VARIANTS = ("torch eager", "torch channels_last")
DEFAULT_DLX = ("dlx (defaults)", "dlx 1 device:parallel=single")


# ---------------------------------------------------------------- workers (child processes)


def serve(run_round) -> None:  # type: ignore[no-untyped-def]
    """Answer `run` with one round's samples/s until `quit`; stdout is the protocol channel."""
    out = sys.stdout
    sys.stdout = sys.stderr  # keep library chatter off the protocol channel
    run_round()  # warm-up: compile / first-touch, outside the timing
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        if line.strip() != "run":
            break
        out.write(json.dumps({"samples_per_sec": run_round()}) + "\n")
        out.flush()


def torch_worker(data: Path, variant: str, steps: int, batch: int, threads: int | None) -> None:
    import numpy as np
    import torch
    from torch import nn

    if threads:
        torch.set_num_threads(threads)
    x = np.load(data / "x.npy", allow_pickle=False)  # NHWC float32
    y = np.load(data / "y.npy", allow_pickle=False)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # NCHW
    yt = torch.from_numpy(y.astype(np.int64))
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(x.shape[-1], 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * (x.shape[1] // 4) * (x.shape[2] // 4), 128),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(128, 10),
    )
    channels_last = variant == "torch channels_last"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def run_round() -> float:
        t = time.perf_counter()
        for i in range(steps):
            xb, yb = xt[i * batch : (i + 1) * batch], yt[i * batch : (i + 1) * batch]
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
        loss.item()  # eager is synchronous on CPU; this is the same end-of-round sync
        return steps * batch / (time.perf_counter() - t)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)
    serve(run_round)


def dlx_worker(data: Path, overrides: list[str], steps: int, batch: int) -> None:
    import numpy as np

    from dlx.setup import check_batches

    # The set-up `dlx train` builds for the recipe, configuring the runtime (CPU device count
    # and XLA flags) before any other JAX call, as dlx train does.
    setup = dlx_setup("cnn", [f"data.batch_size={batch}", *overrides])
    check_batches(setup, batch)
    # The batches the torch workers train on (the task's dataset is not used for training).
    x = np.load(data / "x.npy", allow_pickle=False)
    y = np.load(data / "y.npy", allow_pickle=False)
    task, strategy = setup.task, setup.strategy
    state = strategy.place(setup.init_state())

    def batches():  # put on the devices step by step, inside the timing, as the loop does
        for i in range(steps):
            sl = slice(i * batch, (i + 1) * batch)
            yield strategy.batch(task.host_batch({"x": x[sl], "y": y[sl]}))

    def run_round() -> float:
        nonlocal state
        t = time.perf_counter()
        state = run_steps(setup, state, batches())
        return steps * batch / (time.perf_counter() - t)

    print(
        f"dlx {strategy.describe()}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}",
        file=sys.stderr,
    )
    serve(run_round)


# ---------------------------------------------------------------- parent


QUIET = 0.15  # a round is "quiet" when other processes used less than this many cores


def cpu_ticks(pid: int) -> tuple[int, int, int] | None:
    """(busy ticks of the machine, all ticks, ticks of process `pid`) from /proc; None off Linux."""
    try:
        with open("/proc/stat") as f:
            cpu = [int(v) for v in f.readline().split()[1:]]
        with open(f"/proc/{pid}/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    idle = cpu[3] + cpu[4]  # idle + iowait
    busy = sum(cpu[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy, busy + idle, int(own[11]) + int(own[12])  # utime + stime


def others_cores(before: tuple | None, after: tuple | None) -> float | None:
    """Cores' worth of CPU that processes other than the timed worker used in between."""
    if before is None or after is None or after[1] == before[1]:
        return None
    busy, total, own = (a - b for a, b in zip(after, before, strict=True))
    return max(busy - own, 0) / total * (os.cpu_count() or 1)


class Worker:
    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (lives as long as the worker)
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            env=env, cwd=ROOT,
        )  # fmt: skip

    def ask(self, line: str | None = None) -> dict:
        if line is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        assert self.proc.stdout is not None
        reply = self.proc.stdout.readline()
        if not reply:
            self.log.seek(0)
            sys.exit(f"worker {self.name!r} died:\n{self.log.read()[-3000:]}")
        return json.loads(reply)

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self.log.close()


def parse_dlx(spec: str) -> tuple[str, list[str], dict[str, str]]:
    """`NAME:ARGS` -> name, Hydra overrides, environment (tokens like XLA_FLAGS=...)."""
    name, _, args = spec.partition(":")
    overrides, env = [], {}
    for token in args.split():
        key, eq, value = token.partition("=")
        if eq and key.isupper():
            env[key] = value
        else:
            overrides.append(token)
    return name, overrides, env


def write_data(tmp: Path, n: int) -> dict:
    """The first n training examples in the order of an epoch of `dlx train` (seed 0)."""
    import numpy as np

    from dlx.data import epoch_batches, load_dataset

    data = load_dataset({"name": "mnist"}, 0)
    idx = next(epoch_batches(len(data.x_train), n, seed=0, epoch=1))
    np.save(tmp / "x.npy", np.ascontiguousarray(data.x_train[idx]), allow_pickle=False)
    np.save(tmp / "y.npy", np.ascontiguousarray(data.y_train[idx]), allow_pickle=False)
    return {"dataset": data.name, "source": str(data.source), "examples": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=40, help="train steps per timed round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument(
        "--dlx",
        action="append",
        help="a dlx contender NAME:ARGS (repeatable); default: dlx's defaults and 1 device",
    )
    ap.add_argument("--no-torch", action="store_true", help="dlx contenders only")
    ap.add_argument(
        "--torch-threads", type=int, help="torch.set_num_threads (default: torch's own choice)"
    )
    ap.add_argument(
        "--torch-python",
        default=os.environ.get("DLX_TORCH_PYTHON", "/tmp/torchvenv/bin/python"),
        help="interpreter with torch installed (see the module doc)",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vs_pytorch.json"))
    ap.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        kind, spec = args.worker
        if kind == "torch":
            torch_worker(Path(args.data), spec, args.steps, args.batch, args.torch_threads)
        else:
            dlx_worker(Path(args.data), json.loads(spec), args.steps, args.batch)
        return

    torch_python = None if args.no_torch else args.torch_python
    if torch_python and not Path(torch_python).exists():
        sys.exit(
            f"no PyTorch interpreter at {torch_python}. Create one (not a dlx dependency):\n"
            "  python3.11 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install "
            "torch==2.13.0 numpy\nor pass --torch-python PATH / --no-torch"
        )
    tmp = Path(tempfile.mkdtemp(prefix="dlx-vs-pytorch-"))
    info = write_data(tmp, args.steps * args.batch)
    base = [f"--steps={args.steps}", f"--batch={args.batch}", f"--data={tmp}"]
    env = child_env()
    workers: list[Worker] = []
    specs = {}
    for spec in args.dlx or DEFAULT_DLX:
        name, overrides, extra = parse_dlx(spec)
        specs[name] = {"overrides": overrides, "env": extra}
        argv = [sys.executable, __file__, *base, "--worker", "dlx", json.dumps(overrides)]
        workers.append(Worker(name, argv, {**env, **extra}))
    if torch_python:
        threads = [f"--torch-threads={args.torch_threads}"] if args.torch_threads else []
        for variant in TORCH_VARIANTS:
            argv = [torch_python, __file__, *base, *threads, "--worker", "torch", variant]
            workers.append(Worker(variant, argv, env))
    for w in workers:  # one at a time, so compiles don't compete with each other
        w.ask()
    rates: dict[str, list[float]] = {w.name: [] for w in workers}
    others: dict[str, list[float | None]] = {w.name: [] for w in workers}
    loads = []
    for _ in range(args.rounds):
        for w in workers:
            before = cpu_ticks(w.proc.pid)
            rates[w.name].append(w.ask("run")["samples_per_sec"])
            others[w.name].append(others_cores(before, cpu_ticks(w.proc.pid)))
        loads.append(os.getloadavg()[0])
    notes = {w.name: w.stderr().strip().splitlines()[-1:] for w in workers}
    for w in workers:
        w.close()

    med = medians(rates)
    quiet = {
        k: [r for r, o in zip(v, others[k], strict=True) if o is not None and o < QUIET]
        for k, v in rates.items()
    }
    quiet_med = {k: statistics.median(v) if v else None for k, v in quiet.items()}
    ref = "torch eager" if "torch eager" in med else next(iter(med))
    print(
        f"CNN recipe, batch {args.batch}, {args.steps} steps x {args.rounds} rounds, "
        f"{os.cpu_count()} CPUs, load avg {min(loads):.1f}-{max(loads):.1f}; quiet rounds: "
        f"other processes used < {QUIET} cores"
    )
    print(f"ratios are to {ref!r}")
    print(
        f"{'contender':<34}{'median':>8}{'min':>7}{'max':>7}{'ratio':>8}"
        f"{'quiet median (n)':>19}{'ratio':>8}"
    )
    for k, v in rates.items():
        q, qref = quiet_med[k], quiet_med[ref]
        qcell = f"{q:.0f} ({len(quiet[k])})" if q else "-"
        qratio = f"{q / qref:.2f}x" if q and qref else "-"
        print(
            f"{k:<34}{med[k]:>8.0f}{min(v):>7.0f}{max(v):>7.0f}{med[k] / med[ref]:>7.2f}x"
            f"{qcell:>19}{qratio:>8}"
        )
    for k, lines in notes.items():
        print(f"  {k}: {' '.join(lines)}")
    write_result(
        args.out,
        {
            "benchmark": "vs_pytorch",
            "batch": args.batch,
            "steps_per_round": args.steps,
            "rounds": args.rounds,
            "data": info,
            "contenders": specs,
            "torch_threads": args.torch_threads,
            "samples_per_sec": rates,
            "median": med,
            "ratio_to": ref,
            "ratio": {k: v / med[ref] for k, v in med.items()},
            "others_cores": others,
            "quiet_below_cores": QUIET,
            "quiet_median": quiet_med,
            "worker_notes": notes,
            "load_avg_per_round": loads,
        },
    )


if __name__ == "__main__":
    main()
