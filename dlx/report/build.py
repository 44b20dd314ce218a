"""`dlx report`: which kind of report the paths ask for, and writing the HTML file."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dlx.errors import UserError
from dlx.io import atomic_write
from dlx.report.collect import collect_run, find_runs, is_run_dir, is_sweep_dir

HINT = (
    "pass a run dir (outputs/<recipe>/<time>_<id>), several run dirs or a folder of runs "
    "(outputs/digits), or a sweep dir (outputs/sweeps/<name>)"
)


@dataclass
class Report:
    path: Path
    kind: str  # run | runs | sweep
    sources: list[Path]
    bytes: int
    seconds: float


def check_out(out: Path) -> Path:
    """--out: an .html file in an existing, writable folder (the folder is not created: a
    typo in it should not leave a new folder behind)."""
    out = Path(out).expanduser()
    if out.is_dir():
        raise UserError(
            f"--out {out} is a folder", hint=f"give a file: --out {out / 'report.html'}"
        )
    if out.suffix.lower() not in (".html", ".htm"):
        raise UserError(
            f"--out {out} must end in .html", hint=f"e.g. --out {out.with_suffix('.html').name}"
        )
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(
            f"--out {out}: the folder {parent} does not exist",
            hint=f"create it first (mkdir -p {parent}) or choose a file in an existing folder",
        )
    if not os.access(parent, os.W_OK):
        raise UserError(f"--out {out}: {parent} is not writable", hint="choose another folder")
    return out


def resolve(paths: Sequence[str | Path]) -> tuple[str, list[Path]]:
    """('sweep', [dir]) | ('run', [dir]) | ('runs', [dirs])."""
    if not paths:
        raise UserError("nothing to report", hint=HINT)
    runs: list[Path] = []
    sweeps: list[Path] = []
    for given in paths:
        p = Path(given).expanduser()
        if not p.exists():
            raise UserError(f"{p} does not exist", hint=HINT)
        if not p.is_dir():
            raise UserError(f"{p} is a file, not a run or sweep dir", hint=HINT)
        p = p.resolve()
        if is_sweep_dir(p):
            sweeps.append(p)
        elif is_run_dir(p):
            runs.append(p)
        elif found := find_runs(p):
            runs.extend(found)
        else:
            inner = sorted(m.parent for m in p.glob("**/sweep.yaml") if is_sweep_dir(m.parent))
            hint = f"it holds sweep dirs: dlx report {inner[0]}" if inner else HINT
            raise UserError(f"{p} holds no run (no summary.json) and is no sweep dir", hint=hint)
    if sweeps:
        if len(sweeps) > 1 or runs:
            raise UserError(
                "a sweep is reported on its own",
                hint=f"run `dlx report {sweeps[0]}`; to compare its trials' runs, pass their "
                f"run dirs ({sweeps[0]}/trials/*/*/*)",
            )
        return "sweep", sweeps
    runs = list(dict.fromkeys(runs))
    return ("run" if len(runs) == 1 else "runs"), runs


def build_report(paths: Sequence[str | Path], out: Path) -> Report:
    from dlx.report import html
    from dlx.report.page import page

    out = check_out(out)
    kind, sources = resolve(paths)
    t0 = time.perf_counter()
    generated = time.strftime("%Y-%m-%d %H:%M:%S %z")
    if kind == "sweep":
        from dlx.report.sweep import collect_sweep

        title, body, data = html.render_sweep(collect_sweep(sources[0]), generated)
    elif kind == "run":
        title, body, data = html.render_run(collect_run(sources[0]), generated)
    else:
        title, body, data = html.render_compare([collect_run(r) for r in sources], generated)
    text = page(title, kind, body, data, generated)
    atomic_write(out, text)
    return Report(out.resolve(), kind, sources, len(text.encode()), time.perf_counter() - t0)
