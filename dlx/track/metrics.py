"""metrics.jsonl: one JSON object per line (train logs and evals), appended and flushed."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dlx.io import json_clean, open_append


class MetricsWriter:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._f = open_append(self.path)

    def write(self, record: dict[str, Any]) -> None:
        # JSON has no NaN/inf: json_clean writes them as strings so the file stays valid JSON.
        self._f.write(json.dumps(json_clean(record)) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


SKIP = ("step", "epoch")  # the x axis, not a curve


def scalars(
    record: Mapping[str, Any], batch_size: int | None = None
) -> Iterator[tuple[str, float]]:
    """(tag, value) for every numeric metric of a record; adds train/step_time_s (seconds per
    step, batch / samples per second) when the record has throughput but no step time."""
    for key, value in record.items():
        if key in SKIP or key.endswith("/count"):
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        yield key, float(value)
    sps = record.get("train/samples_per_sec")
    if batch_size and "train/step_time_s" not in record and isinstance(sps, int | float) and sps:
        yield "train/step_time_s", batch_size / float(sps)
