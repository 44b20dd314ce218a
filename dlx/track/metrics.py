"""metrics.jsonl: one JSON object per line (train logs and evals), appended and flushed."""

from __future__ import annotations

import json
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
