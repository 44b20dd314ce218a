"""dlx.io: atomic writes that never leave half a file or a temp file, strict JSON, pid checks."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dlx import io as dio
from dlx.data.cachefile import write_atomic
from dlx.errors import DataError


def _strict_loads(text: str) -> Any:
    """json.loads that fails on NaN/Infinity/-Infinity instead of accepting them."""

    def refuse(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ----- atomic_write


def test_atomic_write_replaces_content_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    dio.atomic_write(path, "first\n")
    assert path.read_text() == "first\n"
    dio.atomic_write(path, "second, ünïcode\n")
    assert path.read_text(encoding="utf-8") == "second, ünïcode\n"
    dio.atomic_write(path, b"\x00\x01bytes")
    assert path.read_bytes() == b"\x00\x01bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_write_mode(tmp_path: Path) -> None:
    old = os.umask(0o077)  # a umask that would otherwise make the file private
    try:
        dio.atomic_write(tmp_path / "a", "x", mode=0o644)
        dio.atomic_write(tmp_path / "b", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o600


def test_atomic_write_failed_replace_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.json"
    path.write_text("old")

    def broken_replace(src: Any, dst: Any) -> None:
        assert Path(src).is_file()  # the new content was written to a temp file first
        raise OSError("disk gone")

    monkeypatch.setattr(dio.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        dio.atomic_write(path, "new")
    assert path.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_write_directory_in_the_way(tmp_path: Path) -> None:
    path = tmp_path / "taken"
    path.mkdir()
    (path / "inside").write_text("kept")
    with pytest.raises(OSError):
        dio.atomic_write(path, "new")
    assert (path / "inside").read_text() == "kept"
    assert _leftovers(tmp_path) == []


def test_atomic_write_failed_write_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(TypeError):
        dio.atomic_write(path, 12345)  # type: ignore[arg-type]  # fails after the temp opened
    assert path.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_write_interrupt_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(src: Any, dst: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(dio.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dio.atomic_write(tmp_path / "out.txt", "new")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        dio.atomic_write(tmp_path / "no" / "such" / "file", "x")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_concurrent_writers_never_collide(tmp_path: Path) -> None:
    """Threads writing one file at once: a shared temp name would lose writes or fail the
    rename (FileNotFoundError when another thread already moved the temp file)."""
    path = tmp_path / "shared.txt"
    errors: list[BaseException] = []
    contents = [f"writer {i}\n" * 2000 for i in range(8)]
    start = threading.Barrier(len(contents))

    def write(text: str) -> None:
        try:
            start.wait()
            for _ in range(25):
                dio.atomic_write(path, text)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=write, args=(c,)) for c in contents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert path.read_text() in contents  # one writer's whole file, never a mix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.txt"]


# ----- json_clean / write_json


def test_json_clean_makes_strict_json() -> None:
    value = {
        "nan": math.nan,
        "inf": math.inf,
        "neg": -math.inf,
        "ok": 1.5,
        "int": 3,
        "bool": True,
        "none": None,
        "text": "nan",
        3: "int key",
        "nested": [
            {
                "np_nan": np.float32("nan"),
                "np_inf": np.float64("inf"),
                "np_neg": np.float16("-inf"),
            },
            (np.int64(7), np.float32(0.5), np.bool_(True), (math.nan,)),
        ],
        "array": np.array([[1.0, np.nan], [np.inf, -np.inf]]),
    }
    clean = dio.json_clean(value)
    assert clean == {
        "nan": "nan",
        "inf": "inf",
        "neg": "-inf",
        "ok": 1.5,
        "int": 3,
        "bool": True,
        "none": None,
        "text": "nan",
        3: "int key",
        "nested": [
            {"np_nan": "nan", "np_inf": "inf", "np_neg": "-inf"},
            [7, 0.5, True, ["nan"]],
        ],
        "array": [[1.0, "nan"], ["inf", "-inf"]],
    }
    a, b, c, _ = clean["nested"][1]
    assert type(a) is int and type(b) is float and type(c) is bool  # plain Python scalars
    assert type(clean["nested"][0]["np_nan"]) is str
    assert math.isnan(value["nan"])  # the input is not modified
    text = json.dumps(clean, allow_nan=False)
    assert _strict_loads(text)["nested"][0]["np_neg"] == "-inf"


def test_json_clean_finite_numpy_float_becomes_float() -> None:
    out = dio.json_clean(np.float64(2.5))
    assert out == 2.5 and type(out) is float


def test_write_json_is_strict_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_text("{}")
    dio.write_json(path, {"loss": math.nan, "best": {"acc": np.float32(0.25), "step": 4}})
    text = path.read_text()
    assert text.endswith("}\n") and "\n  " in text  # indented, newline-terminated
    assert _strict_loads(text) == {"loss": "nan", "best": {"acc": 0.25, "step": 4}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_rundir_write_json_is_the_shared_one() -> None:
    from dlx import rundir

    assert rundir.write_json is dio.write_json


def test_metrics_writer_writes_strict_json(tmp_path: Path) -> None:
    from dlx.track.metrics import MetricsWriter, read_metrics

    writer = MetricsWriter(tmp_path / "metrics.jsonl")
    writer.write({"step": 1, "train/loss": math.nan, "val/acc": np.float32(0.5), "x": [math.inf]})
    writer.close()
    line = (tmp_path / "metrics.jsonl").read_text().splitlines()[0]
    assert _strict_loads(line) == {"step": 1, "train/loss": "nan", "val/acc": 0.5, "x": ["inf"]}
    assert read_metrics(tmp_path / "metrics.jsonl")[0]["train/loss"] == "nan"


# ----- the dataset cache's wrapper


def test_cache_write_atomic_is_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "sub" / "data.bin"  # folders are created
    old = os.umask(0o077)
    try:
        write_atomic(path, b"payload")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"payload"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert _leftovers(path.parent) == []


def test_cache_write_atomic_failure_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.mkdir()  # a folder where the file should go
    with pytest.raises(DataError, match="cannot write the dataset cache file"):
        write_atomic(path, b"payload")
    assert _leftovers(tmp_path) == []


# ----- pid_alive


def test_pid_alive_self() -> None:
    assert dio.pid_alive(os.getpid()) is True


def test_pid_alive_reaped_child() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid no longer exists
    assert dio.pid_alive(proc.pid) is False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_pid_alive_zombie_child() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        state = ""
        deadline = time.monotonic() + 30
        while state != "Z" and time.monotonic() < deadline:  # exited, not yet waited for
            state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            time.sleep(0.01)
        assert state == "Z"
        os.kill(proc.pid, 0)  # the zombie still "exists" for os.kill...
        assert dio.pid_alive(proc.pid) is False  # ...but counts as gone
    finally:
        proc.wait()


@pytest.mark.parametrize("pid", [0, -1, -os.getpid(), True, False, None, "abc", "1", 1.0, 2**80])
def test_pid_alive_not_a_pid(pid: Any) -> None:
    assert dio.pid_alive(pid) is False


def test_io_does_not_import_jax() -> None:
    code = "import sys, dlx.io; assert 'jax' not in sys.modules and 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
