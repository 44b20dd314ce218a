"""Hostile input across every command: each case must end with one clear message (an
`error:` line, with a `fix:` line where dlx can say one; or Typer's usage error for a bad
option), exit code 2, no traceback, and nothing written outside its outputs folder.

    python benchmarks/bad_inputs.py [--jobs 2] [--only SUBSTRING]

Builds a workspace in a temp dir (a finished tiny digits run, copies of it with a garbage
config, a `!!python/object` config and corrupt checkpoints, bad data files), runs every case
as a real `python -m dlx` process (CI=true, no stdin), prints a table and writes
benchmarks/results/bad_inputs.json. The default test suite runs a sample of these cases
(tests/test_faults.py); this script is the whole set.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dlx_side import ROOT, child_env
from report import write_result

TINY = ["recipe=digits", "trainer.max_steps=2", "data.limit_train=256", "data.limit_eval=64"]


def dlx(args: list[str], cwd: Path, env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dlx", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def workspace(ws: Path, env: dict) -> dict[str, Path]:
    """A finished run and broken copies of it, plus bad data files."""
    out = dlx(["train", *TINY, f"outputs.dir={ws / 'good'}", "trainer.progress=none"], ws, env)
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = (ws / "good" / "digits").iterdir()
    paths = {"run": run}
    for name in ("garbage", "pyobject", "corrupt", "nocheckpoints", "nonmapping"):
        paths[name] = ws / name
        shutil.copytree(run, paths[name])
    (paths["garbage"] / "config.yaml").write_text("recipe: [digits\nmodel: {{{\n")
    (paths["pyobject"] / "config.yaml").write_text(
        "!!python/object/apply:os.system ['touch " + str(ws / "pwned") + "']\n"
    )
    (paths["nonmapping"] / "config.yaml").write_text("- just\n- a list\n")
    for f in (paths["corrupt"] / "checkpoints").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\0" * 7)
    shutil.rmtree(paths["nocheckpoints"] / "checkpoints")
    (paths["nocheckpoints"] / "checkpoints").mkdir()
    data = ws / "data"
    data.mkdir()
    (data / "garbage.csv").write_bytes(b"\x00\xff\xfe garbage \n\x00,,,\n")
    (data / "empty.csv").write_text("")
    (data / "header_only.csv").write_text("a,b,label\n")
    (data / "text.csv").write_text("a,b,label\nx,y,1\nz,w,0\n")
    import numpy as np

    np.savez(data / "no_y.npz", x=np.zeros((10, 4), np.float32))
    np.savez(data / "objects.npz", x=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4))
    np.savez(data / "mismatch.npz", x=np.zeros((10, 4), np.float32), y=np.zeros(7))
    (data / "empty_folder").mkdir()
    (data / "binary.txt").write_bytes(os.urandom(2048))
    (data / "a_file").write_text("not a folder")
    (ws / "recipes").mkdir()
    (ws / "recipes" / "broken.yaml").write_text("defaults: [\n")
    paths["data"] = data
    return paths


def cases(p: dict[str, Path], ws: Path) -> list[tuple[str, list[str]]]:
    run, data, o = str(p["run"]), p["data"], f"outputs.dir={ws / 'out'}"
    train = [
        ("train", t)
        for t in [
            ["recipe=nope"],
            ["model=nope"],
            ["optim=nope"],
            ["schedule=nope"],
            ["parallel=nope"],
            ["data=nope"],
            ["task=nope"],
            ["logger=[jsonl,foo]"],
            ["=3"],
            ["optim.lr=nan"],
            ["optim.lr=inf"],
            ["optim.lr=-1"],
            ["optim.lr=abc"],
            ["optim.lr=0"],
            ["recipe=digits", "model.dropout=2"],
            ["recipe=digits", "model.dropout=-0.1"],
            ["recipe=digits", "model.dropout=abc"],
            ["recipe=digits", "model.features=abc"],
            ["recipe=digits", "model.dense=-3"],
            ["recipe=digits", "model.dense=abc"],
            ["recipe=digits", "model.dropout=[1,2]"],
            ["recipe=rnn", "model.hidden=abc"],
            ["recipe=transformer", "model.heads=3"],
            [*TINY, "trainer.best_metric=val/acc"],
            ["trainer.best_mode=up"],
            ["trainer.epochs=0"],
            ["trainer.epochs=-1"],
            ["trainer.max_steps=0"],
            ["trainer.max_steps=-5"],
            ["data.batch_size=0"],
            ["recipe=digits", "data.batch_size=1000000"],
            ["data.val_size=2.0"],
            ["data.val_size=-3"],
            ["data.limit_train=0"],
            ["data.limit_train=-1"],
            ["trainer.progress=loud"],
            ["trainer.log_every=0"],
            ["trainer.sync_every=0"],
            ["seed=abc"],
            ["optim.b1=1.5"],
            ["optim.b2=-0.1"],
            ["optim.eps=-1"],
            ["optim.weight_decay=-1"],
            ["optim.clip_norm=0"],
            ["optim.momentum=2"],
            ["schedule.warmup_fraction=1.5"],
            ["schedule.final_fraction=-1"],
            ["trainer.early_stopping.patience=0"],
            [*TINY, "trainer.early_stopping.patience=2", "trainer.early_stopping.metric=val/nope"],
            ["trainer.early_stopping.mode=up"],
            ["trainer.eval_every=0"],
            ["data.eval_batch_size=0"],
            ["parallel.devices=0"],
            ["parallel.devices=999"],
            ["parallel.cpu_devices=abc"],
            ["recipe=digits", f"data.path={ws / 'nowhere'}"],
            ["init_from=/nonexistent"],
            ["recipe=digits", "model.dense=16", f"init_from={run}"],
            ["resume=/nonexistent"],
            [f"resume={ws}"],
            [f"resume={run}", "recipe=cnn"],
            [f"resume={p['garbage']}"],
            [f"resume={p['pyobject']}"],
            [f"resume={p['nonmapping']}"],
            [f"resume={p['corrupt']}", "trainer.max_steps=6"],
            [f"resume={p['nocheckpoints']}", "trainer.max_steps=6"],
            [f"resume={run}", "optim.lrr=1"],
            [f"resume={run}", "optim.lr=nan"],
            [*TINY, "outputs.dir=/sys/dlx-outputs"],
            [*TINY, f"outputs.dir={data / 'a_file'}"],
            ["trainer.profile_steps=[5]"],
            ["trainer.profile_steps=[5,2]"],
            ["recipe=digits", "model._target_=nope.Nope"],
            ["recipe=digits", "model._target_=os.system"],
            ["recipe=digits", "data._target_=nope.load"],
            ["dist.num_processes=0"],
            ["trainer.checkpoint=maybe"],
            ["data.normalize=maybe"],
            ["+foo=1"],
            ["recipe=broken"],
            ["trainer.epochs=1.5"],
            ["data.batch_size=[32]"],
            ["recipe=digits", "task=lm"],
            ["recipe=digits", "task.name=nope"],
            ["data=csv", f"data.path={data / 'garbage.csv'}", o],
            ["data=csv", f"data.path={data / 'empty.csv'}", o],
            ["data=csv", f"data.path={data / 'header_only.csv'}", o],
            ["data=csv", f"data.path={data / 'text.csv'}", "data.target=nope", o],
            ["data=arrays", f"data.path={data / 'no_y.npz'}", o],
            ["data=arrays", f"data.path={data / 'objects.npz'}", o],
            ["data=arrays", f"data.path={data / 'mismatch.npz'}", o],
            ["data=image_folder", f"data.path={data / 'empty_folder'}", o],
            ["recipe=transformer", f"data.path={data / 'binary.txt'}", o],
        ]
    ]
    other = [
        ("eval", ["/nonexistent"]),
        ("eval", [run, "--split", "nope"]),
        ("eval", [run, "--step", "999"]),
        ("eval", [str(p["garbage"])]),
        ("eval", [str(p["pyobject"])]),
        ("eval", [str(p["nonmapping"])]),
        ("eval", [run, "data.batch_size=abc"]),
        ("eval", [run, "nope.key=1"]),
        ("eval", [str(p["corrupt"])]),
        ("eval", [str(p["nocheckpoints"])]),
        ("eval", [run, "--step", "abc"]),
        ("explain", ["/nonexistent"]),
        ("explain", [str(p["garbage"])]),
        ("explain", [str(p["pyobject"])]),
        ("explain", [run, "--n", "0"]),
        ("explain", [str(p["corrupt"])]),
        ("sample", [run]),
        ("sample", ["/nonexistent"]),
        ("sample", [str(p["garbage"])]),
        ("plot", ["/nonexistent"]),
        ("plot", [run, "--metric", "nope"]),
        ("plot", [run, "--out", str(data / "a_file" / "x.png")]),
        ("show", ["recipe=nope"]),
        ("show", ["optim.lr=nan"]),
        ("show", ["trainer.best_mode=up"]),
        ("launch", ["--nproc", "0", "--", "train", "recipe=digits"]),
        ("launch", ["--nproc", "abc"]),
        ("launch", ["--nproc", "2"]),
        ("runs", ["--root", "/nonexistent"]),
        ("sweep", ["recipe=digits", "optim.lr=choice()"]),
        ("sweep", ["recipe=digits", "optim.lr=tag(log, interval(1e-2,1e-4))", "--dry-run"]),
        ("sweep", ["recipe=digits", "optim.lrr=1,2", "--dry-run"]),
        ("sweep", ["recipe=digits", "optim.lr=1e-3,nan", "--dry-run"]),
        ("sweep", ["recipe=digits", "sweep=nope"]),
        ("sweep", ["recipe=digits", "optim.lr=1e-3", "sweep.storage=bogus://x", "--dry-run"]),
        ("sweep", ["recipe=digits", "--jobs", "0"]),
        ("nonsense", []),
    ]
    return train + other


def classify(out: subprocess.CompletedProcess) -> str:
    text = out.stdout + out.stderr
    if "Traceback" in text:
        return "traceback"
    if out.returncode != 2:
        return f"exit {out.returncode}"
    if out.stderr.startswith("error:") or "Usage:" in out.stderr:
        return "clean"
    return "exit 2, no error: line"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    ws = Path(tempfile.mkdtemp(prefix="dlx-bad-"))
    env = {**child_env(), "CI": "true", "COLUMNS": "200", "DLX_CACHE": str(ws / "cache")}
    paths = workspace(ws, env)
    todo = [(cmd, a) for cmd, a in cases(paths, ws) if args.only in " ".join([cmd, *a])]
    before = {str(f) for f in paths["run"].rglob("*")}

    def one(case: tuple[str, list[str]]) -> dict:
        cmd, a = case
        t0 = time.perf_counter()
        out = dlx([cmd, *a] if cmd != "nonsense" else ["nonsense"], ws, env)
        lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
        return {
            "command": " ".join(["dlx", cmd, *a]).replace(str(ws), "$WS"),
            "result": classify(out),
            "exit": out.returncode,
            "message": (lines[0] if lines else "")[:110].replace(str(ws), "$WS"),
            "fix": any(ln.startswith("fix:") for ln in lines),
            "seconds": round(time.perf_counter() - t0, 1),
        }

    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(one, todo))
    leaks = sorted(str(f) for f in paths["run"].rglob("*") if str(f) not in before)
    pwned = (ws / "pwned").exists()
    clean = sum(r["result"] == "clean" for r in rows)
    for r in rows:
        print(
            f"{r['result']:<22} {'fix' if r['fix'] else '   '} "
            f"{r['command'][:60]:<60} {r['message']}"
        )
    print(
        f"\n{clean}/{len(rows)} clean exit-2 results; code run from YAML: {pwned}; "
        f"files added to the good run by bad commands: {len(leaks)}"
    )
    write_result(
        ROOT / "benchmarks" / "results" / "bad_inputs.json",
        {"clean": clean, "cases": len(rows), "pwned": pwned, "leaks": leaks, "rows": rows},
    )
    shutil.rmtree(ws, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
