"""What every benchmark script shares: the median/min/max table and the JSON result file."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def medians(samples: Mapping[str, Sequence[float]]) -> dict[str, float]:
    return {k: statistics.median(v) for k, v in samples.items()}


def print_table(
    samples: Mapping[str, Sequence[float]], header: str, label_width: int = 20, digits: int = 0
) -> dict[str, float]:
    """One row per contender: median, min, max of its samples. Returns the medians."""
    med = medians(samples)
    wide = max(len(header), 10) + 2
    print(f"{'':<{label_width}}{header:>{wide}}{'min':>9}{'max':>9}")
    for k, v in samples.items():
        print(
            f"{k:<{label_width}}{med[k]:>{wide}.{digits}f}{min(v):>9.{digits}f}{max(v):>9.{digits}f}"
        )
    return med


def machine() -> dict:
    """Where and when it ran: cores, load, versions (a result is only comparable with these)."""
    info = {
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg()[0],
        "python": platform.python_version(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    try:
        import jax

        info["jax"] = jax.__version__
    except ImportError:  # e.g. the PyTorch interpreter
        pass
    return info


def write_result(out: str | Path, result: dict) -> None:
    """Write `result` plus `machine()` as JSON to `out` (folders created) and say where."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**result, **machine()}, indent=2) + "\n")
    print(f"wrote {path}")
