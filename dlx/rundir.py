"""Run directories: one per run, never shared, with the config and provenance written first."""

from __future__ import annotations

import platform
import secrets
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

# Re-exported: the training code imports write_json from here for meta.json and summary.json.
from dlx.io import write_json as write_json

PACKAGES = (
    "dlx",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "numpy",
    "hydra-core",
    "omegaconf",
    "typer",
    "rich",
)


def create_run_dir(root: Path, recipe: str) -> Path:
    """`root/<recipe>/<YYYY-mm-dd_HH-MM-SS>_<id>/`, created exclusively.

    mkdir without exist_ok is atomic, so two runs started in the same second (or on two
    machines sharing a filesystem) can never share a directory: a clash just draws a new id.
    """
    parent = Path(root).resolve() / recipe
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    for _ in range(100):
        path = parent / f"{stamp}_{secrets.token_hex(2)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a fresh run directory under {parent}")


def check_contained(run_dir: Path) -> None:
    """Refuse a run dir holding a symlink that leads outside it: resuming appends to its logs
    and rewrites its plots and summaries, and must never write through a link elsewhere."""
    from dlx.errors import UserError

    root = Path(run_dir).resolve()
    for path in sorted(Path(run_dir).rglob("*")):
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            raise UserError(
                f"{path} is a symlink to {path.resolve()}, outside the run dir",
                hint="a run dir must hold its own files: replace the link with a copy of "
                "what it points to (or remove it), then resume",
            )


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_info(cwd: Path) -> dict[str, Any]:
    """Commit and dirty flag of the repository the run was launched from (None outside git)."""
    sha = _git(["rev-parse", "HEAD"], cwd)
    if sha is None:
        return {"sha": None, "dirty": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return {"sha": sha, "dirty": bool(status)}


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def run_meta(devices: list[Any], command: list[str]) -> dict[str, Any]:
    """Provenance: how to rerun (command), what code (git, packages), where (devices)."""
    cwd = Path.cwd()
    return {
        "command": command,
        "argv": sys.argv,
        "cwd": str(cwd),
        "git": git_info(cwd),
        "packages": package_versions(),
        "python": platform.python_version(),
        "host": platform.node(),
        "devices": [str(d) for d in devices],
        "platform": devices[0].platform if devices else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
