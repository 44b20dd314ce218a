"""`dlx report RUN|SWEEP|RUN...`: write one self-contained HTML report (dlx/report/)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dlx.report import Report, build_report


def report_command(paths: Sequence[str], out: Path) -> Report:
    return build_report(paths, out)


def describe(rep: Report) -> str:
    what = {"run": "run", "runs": f"{len(rep.sources)} runs", "sweep": "sweep"}[rep.kind]
    return f"wrote {rep.path} ({what}, {rep.bytes / 1024:.0f} KiB, {rep.seconds:.2f} s)"
