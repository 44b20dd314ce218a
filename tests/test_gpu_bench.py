"""benchmarks/gpu.sh's Python side, proven on the CPU (no GPU here): its tiny mode
(GPU_BENCH_CPU=1: 2 steps of digits at fp32 and bf16, a 1-layer fsdp transformer) runs end to
end and reports XLA's FLOP counts, throughput and a confirmed fsdp size; the datasheet table
matches the device kinds JAX reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.slow  # ~15-25 s: two recipe builds, a transformer compile and run
def test_gpu_script_runs_in_cpu_mode(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "gpu.json"
    env = {
        **os.environ,
        "GPU_BENCH_CPU": "1",
        "DLX_CACHE": str(cache_dir),
        "PYTHON": sys.executable,
    }
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [str(BENCH / "gpu.sh"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["backend"] == "cpu" and not result["errors"]
    rows = {r["precision"]: r for r in result["rows"]}
    assert set(rows) == {"fp32", "bf16"} and all(r["recipe"] == "digits" for r in rows.values())
    for r in rows.values():
        assert r["flops_per_step"] > 1e6  # XLA's count for a 64-example CNN step
        assert r["samples_per_s"] > 0 and r["step_ms"] > 0
        assert 0 < r["share_of_measured_peak"] < 2
    assert rows["bf16"]["flops_per_step"] != rows["fp32"]["flops_per_step"]  # bf16 compiled
    assert all(v > 0 for v in result["matmul_tflops"].values())
    largest = result["largest_fsdp"]["largest"]
    assert largest["d_model"] == 64 and largest["step_ms"] > 0 and largest["peak_bytes"] > 0
    assert "| digits | fp32 |" in proc.stdout and "| digits | bf16 |" in proc.stdout
    assert "largest parallel=fsdp transformer that fits" in proc.stdout


def test_datasheet_peaks_match_device_kinds(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    from gpu_table import spec_peak

    assert spec_peak("NVIDIA H100 PCIe")["fp32"] == 51.2  # not the SXM entry
    assert spec_peak("NVIDIA H100 80GB HBM3")["bf16"] == 989.4
    assert spec_peak("NVIDIA H200")["tf32"] == 494.7
    assert spec_peak("NVIDIA A100-SXM4-80GB")["bf16"] == 312.0
    assert spec_peak("cpu") is None
