"""dlx as a user gets it: a wheel built from this checkout, installed into a fresh venv, then
examples/my_project copied to a temp folder and trained and evaluated there. Proves that no
file of the checkout is needed (configs and recipes ship inside the wheel) and that a
project's own model, loader and recipe come in without editing dlx.

The fresh venv borrows the installed dependencies (jax, flax, ...) through a .pth file, so
the test needs no network; dlx itself comes only from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh venv with dlx installed from a wheel of this checkout."""
    base = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(base / "dist"),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (base / "dist").glob("dlx-*.whl")
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Dependencies from this test's environment; dlx itself must come from the wheel.
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    return env_dir / "bin"


def _run(bin_dir: Path, cwd: Path, *args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(DLX_CACHE=str(cache), JAX_PLATFORMS="cpu")
    return subprocess.run(
        [str(bin_dir / "dlx"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_example_project_trains_and_evaluates_from_a_wheel(
    installed: Path, tmp_path: Path, cache_dir: Path
) -> None:
    where = subprocess.run(
        [str(installed / "python"), "-c", "import dlx, sys; print(dlx.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(installed.parent), f"dlx imported from {where}"
    project = tmp_path / "my_project"
    shutil.copytree(ROOT / "examples" / "my_project", project)
    out = _run(
        installed,
        project,
        "train",
        "recipe=digits_resnet",
        "trainer.epochs=10",
        "trainer.progress=plain",
        "outputs.dir=runs",
        cache=cache_dir,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    (run,) = (project / "runs" / "digits_resnet").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["test"]["test/accuracy"] > 0.8  # 10 epochs of a real model on real digits
    assert "mynets.SmallResNet" in out.stdout and "mydata.load" in out.stdout
    evaluated = _run(installed, project, "eval", str(run), cache=cache_dir)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (report,) = run.glob("eval_test_*.json")
    metrics = json.loads(report.read_text())["metrics"]
    assert metrics["test/accuracy"] == pytest.approx(summary["test"]["test/accuracy"])
    # The recipes shipped inside the wheel work from any folder, too.
    shown = _run(installed, tmp_path, "show", "recipe=digits", cache=cache_dir)
    assert shown.returncode == 0 and "name: digits" in shown.stdout
