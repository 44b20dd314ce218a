"""Training from a dataset several times larger than the memory the process may use.

- disk: `dlx train recipe=cnn data=mapped data.path=DIR`, DIR being MNIST tiled (each copy
  of the 60k training images shifted by -2..2 pixels) to --size-gib of uint8 .npy shards.
- memory: `dlx train recipe=cnn` (plain MNIST, float32 in memory): the same example shape,
  model, batch and steps.

Both run in one cgroup v1 memory group capped at --cap-gib (memory.limit_in_bytes, and
memory.memsw.limit_in_bytes where present, so swap is no way out); the page cache the disk
run fills is charged to the group, so at most the cap of the file is ever cached and most
batches are read from the disk. The shards are written outside the group and then dropped
from the page cache (fsync + POSIX_FADV_DONTNEED), or the runs would read them from the cache
the writer filled. Each run is --steps steps in a random batch order over the whole file
(val/test evaluated at the end only; dlx's samples/s excludes compilation and evals).
Contenders: memory, disk (data.order=random: the in-memory run's exact batch order) and
disk:quasi_random (blocks of rows in random order, shuffled within windows: FFCV's
QUASI_RANDOM; --orders picks). Rounds rotate the order they run in. Reported per run:
samples/s, peak RSS (VmHWM of the training process), the group's peak usage
(memory.max_usage_in_bytes, page cache included), bytes the process read from the disk
(/proc/PID/io read_bytes).

    sudo python benchmarks/larger_than_memory.py [--size-gib 6] [--cap-gib 1.5] [--steps 1500]
        [--orders random quasi_random]

Needs root and the cgroup v1 memory controller. Prints a table and writes
benchmarks/results/larger_than_memory.json; deletes the dataset unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from dlx_side import ROOT, child_env
from report import write_result

CGROUP = Path("/sys/fs/cgroup/memory/dlx_bench")
GIB = 2**30


def mnist_raw() -> dict[str, np.ndarray]:
    from dlx.data.config import cache_dir
    from dlx.data.idx import parse_idx

    root = cache_dir({}) / "mnist"
    out = {}
    for key, name in (
        ("x", "train-images-idx3-ubyte"),
        ("y", "train-labels-idx1-ubyte"),
        ("xt", "t10k-images-idx3-ubyte"),
        ("yt", "t10k-labels-idx1-ubyte"),
    ):
        out[key] = parse_idx((root / name).read_bytes(), name)
    return out


def build(path: Path, size_gib: float) -> int:
    """MNIST tiled with shifts to `size_gib` of train x; returns the bytes of x written."""
    from dlx.data.mapped import ShardWriter
    from dlx.data.mnist import MNIST_MEAN, MNIST_STD

    m = mnist_raw()
    rows = int(size_gib * GIB) // (28 * 28)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    with ShardWriter(
        path,
        num_classes=10,
        scale=255.0,
        normalize=(MNIST_MEAN, MNIST_STD),
        classes=[str(d) for d in range(10)],
        overwrite=True,
    ) as w:
        done = 0
        while done < rows:
            n = min(len(m["x"]), rows - done)
            order = rng.permutation(len(m["x"]))[:n]
            dy, dx = rng.integers(-2, 3, 2)
            w.add("train", np.roll(m["x"][order], (dy, dx), axis=(1, 2))[..., None], m["y"][order])
            done += n
        w.add("val", m["xt"][:5000, ..., None], m["yt"][:5000])
        w.add("test", m["xt"][5000:, ..., None], m["yt"][5000:])
    print(
        f"wrote {rows:,} examples ({rows * 784 / GIB:.2f} GiB) in {time.perf_counter() - t:.0f} s"
    )
    return rows * 784


def drop_from_page_cache(path: Path) -> None:
    for f in path.rglob("*.npy"):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def make_cgroup(cap: int) -> None:
    CGROUP.mkdir(exist_ok=True)
    (CGROUP / "memory.limit_in_bytes").write_text(str(cap))
    memsw = CGROUP / "memory.memsw.limit_in_bytes"
    if memsw.exists():
        memsw.write_text(str(cap))


def status(pid: int) -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon, RssFile (bytes) and read_bytes of a live process."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "read_bytes":
                out[key] = int(value)
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def empty_cgroup(timeout_s: float = 60.0) -> None:
    """Wait for the run's helper processes (its plot helper outlives `dlx train`) to leave the
    group: the next run's peak usage must be its own."""
    end = time.monotonic() + timeout_s
    while (CGROUP / "cgroup.procs").read_text().split() and time.monotonic() < end:
        time.sleep(0.5)


def train(kind: str, data_dir: Path, steps: int, out: Path, extra: tuple[str, ...] = ()) -> dict:
    args = [
        sys.executable,
        "-m",
        "dlx",
        "train",
        "recipe=cnn",
        f"trainer.max_steps={steps}",
        "trainer.eval_every=1000",
        "trainer.progress=plain",
        f"outputs.dir={out}",
    ]
    if kind.startswith("disk"):  # disk (random order) or disk:quasi_random
        order = kind.partition(":")[2] or "random"
        args += ["data=mapped", f"data.path={data_dir}", f"data.order={order}"]
    args += extra
    (CGROUP / "memory.max_usage_in_bytes").write_text("0")
    failcnt0 = int((CGROUP / "memory.failcnt").read_text())

    def enter_cgroup() -> None:
        (CGROUP / "cgroup.procs").write_text(str(os.getpid()))

    log = out.parent / f"dlx_ltm_{kind.replace(':', '_')}.log"
    t = time.perf_counter()
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            args,
            env=child_env(),
            cwd=ROOT,
            preexec_fn=enter_cgroup,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    seen: dict[str, int] = {}
    while True:  # wait4, not Popen.wait: it returns the child's own peak RSS (ru_maxrss)
        pid, code, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        seen = status(proc.pid) or seen
        time.sleep(0.25)
    proc.returncode = os.waitstatus_to_exitcode(code)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        print(log.read_text()[-3000:])
        raise SystemExit(f"{kind} run failed (exit {proc.returncode}); log: {log}")
    log.unlink()
    empty_cgroup()
    (run,) = [p for p in (out / "cnn").iterdir() if p.is_dir()]
    summary = json.loads((run / "summary.json").read_text())
    shutil.rmtree(out)
    return {
        "kind": kind,
        "status": summary["status"],
        "steps": summary["steps"],
        "samples_per_sec": summary["samples_per_sec"],
        "test_accuracy": summary["test"]["test/accuracy"],
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # the process's VmHWM at exit
        # CPU seconds of the whole run (start-up, compile, evals included): unlike samples/s,
        # not changed by what else the machine runs, so it shows the disk path's own cost
        "cpu_user_s": usage.ru_utime,
        "cpu_sys_s": usage.ru_stime,
        "rss_file_bytes_last": seen.get("RssFile"),
        "disk_read_bytes": seen.get("read_bytes"),
        "cgroup_max_usage_bytes": int((CGROUP / "memory.max_usage_in_bytes").read_text()),
        "cgroup_limit_hits": int((CGROUP / "memory.failcnt").read_text()) - failcnt0,
        "wall_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gib", type=float, default=6.0)
    ap.add_argument("--cap-gib", type=float, default=1.5)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--orders", nargs="+", default=["random", "quasi_random"], help="data.order of disk runs"
    )
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "dlx_ltm")
    ap.add_argument("--keep", action="store_true", help="keep the dataset (and reuse it)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/larger_than_memory.json"))
    args = ap.parse_args()
    if os.geteuid() != 0 or not CGROUP.parent.is_dir():
        raise SystemExit("needs root and the cgroup v1 memory controller at " + str(CGROUP.parent))
    load = os.getloadavg()[0]
    meta = args.dir / "meta.json"
    want = int(args.size_gib * GIB) // 784
    if meta.is_file() and json.loads(meta.read_text())["splits"]["train"]["rows"] == want:
        size = want * 784
        print(f"reusing {args.dir}")
    else:
        size = build(args.dir, args.size_gib)
    on_disk = sum(f.stat().st_size for f in args.dir.rglob("*.npy"))
    cap = int(args.cap_gib * GIB)
    make_cgroup(cap)
    runs = []
    try:
        kinds = ["memory", *(("disk" if o == "random" else f"disk:{o}") for o in args.orders)]
        for r in range(args.rounds):
            for kind in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:  # rotated per round
                drop_from_page_cache(args.dir)
                res = train(kind, args.dir, args.steps, args.dir.parent / "dlx_ltm_out")
                print(
                    f"round {r + 1} {kind:<17} {res['samples_per_sec']:8.0f} samples/s, "
                    f"peak RSS {res['peak_rss_bytes'] / GIB:.2f} GiB, cgroup peak "
                    f"{res['cgroup_max_usage_bytes'] / GIB:.2f} GiB, read "
                    f"{(res['disk_read_bytes'] or 0) / GIB:.2f} GiB from disk"
                )
                runs.append(res)
    finally:
        try:
            empty_cgroup()
            CGROUP.rmdir()  # empty once the runs exited
        except OSError as err:
            print(f"could not remove {CGROUP}: {err}")
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)

    def med(kind: str, key: str) -> float:
        return statistics.median(x[key] for x in runs if x["kind"] == kind)

    disks = [k for k in kinds if k != "memory"]
    ratios = {k: med(k, "samples_per_sec") / med("memory", "samples_per_sec") for k in disks}
    print(
        f"\ndataset: {size / GIB:.2f} GiB of train x ({on_disk / GIB:.2f} GiB of files), "
        f"memory cap {cap / GIB:.2f} GiB ({on_disk / cap:.1f}x), {args.steps} steps, "
        f"load before {load:.2f}"
    )
    print(
        f"{'':<18}{'samples/s':>10}{'vs memory':>10}{'peak RSS GiB':>14}{'cgroup peak GiB':>17}"
        f"{'disk read GiB':>15}{'CPU s':>8}{'sys s':>8}{'test acc':>9}"
    )
    for kind in kinds:
        print(
            f"{kind:<18}{med(kind, 'samples_per_sec'):>10.0f}{ratios.get(kind, 1.0):>10.3f}"
            f"{med(kind, 'peak_rss_bytes') / GIB:>14.2f}"
            f"{med(kind, 'cgroup_max_usage_bytes') / GIB:>17.2f}"
            f"{(med(kind, 'disk_read_bytes') or 0) / GIB:>15.2f}"
            f"{med(kind, 'cpu_user_s') + med(kind, 'cpu_sys_s'):>8.1f}"
            f"{med(kind, 'cpu_sys_s'):>8.1f}"
            f"{med(kind, 'test_accuracy'):>9.4f}"
        )
    for kind in disks:  # per round: against the memory run of the same round
        per_round = [
            d["samples_per_sec"] / m["samples_per_sec"]
            for d, m in zip(
                [x for x in runs if x["kind"] == kind],
                [x for x in runs if x["kind"] == "memory"],
                strict=False,
            )
        ]
        print(f"{kind} / memory: {ratios[kind]:.3f} median (target >= 0.95); per round: "
              + ", ".join(f"{p:.3f}" for p in per_round))  # fmt: skip
    ratio = max(ratios.values())
    write_result(
        args.out,
        {
            "benchmark": "larger_than_memory",
            "dataset_bytes": size,
            "files_bytes": on_disk,
            "cap_bytes": cap,
            "steps": args.steps,
            "load_before": load,
            "ratio": ratio,
            "ratios": ratios,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
