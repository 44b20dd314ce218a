"""The user's own code: `_target_: package.module.Name` in a config section (Hydra's
convention) and entry points of installed packages (`dlx.models`, `dlx.datasets`).

The folder `dlx` is launched from is importable, as `python -m` would make it, so a project's
`mynets.py` next to its `recipes/` needs no install. Importing is what running the user's
code means: it happens only for a `_target_` the user wrote or an entry point a package
they installed declares.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from dlx.errors import UserError, suggest

TARGET = "_target_"
GROUPS = {"model": "dlx.models", "data": "dlx.datasets"}  # config section -> entry-point group


def launch_dir_importable() -> None:
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def import_target(path: Any, key: str) -> Any:
    """The object `path` ("pkg.module.Name" or "pkg.module:Name") names; `key` is the config
    key it came from (e.g. model._target_), for the error message."""
    if not isinstance(path, str) or not path.strip():
        raise UserError(f"{key} must be an import path like mypkg.nets.Net, got {path!r}")
    launch_dir_importable()
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise UserError(
            f"{key}={path}: not an import path (module.Name)",
            hint=f"e.g. {key}=mynets.ResNet for class ResNet in ./mynets.py",
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # the user's module raising anything on import
        missing = getattr(err, "name", None)
        why = (
            f"no module named '{missing}'"
            if isinstance(err, ModuleNotFoundError)
            else f"{type(err).__name__}: {err}"
        )
        raise UserError(
            f"{key}={path}: cannot import module '{module_name}' ({why})",
            hint=f"put {module_name.replace('.', '/')}.py in the folder you run dlx from "
            f"({Path.cwd()}), or install the package that provides it",
        ) from err
    try:
        return getattr(module, attr)
    except AttributeError:
        names = [n for n in dir(module) if not n.startswith("_")]
        raise UserError(
            f"{key}={path}: module '{module_name}' ({getattr(module, '__file__', '?')}) has no "
            f"attribute '{attr}'.{suggest(attr, names)}",
            hint=f"names in {module_name}: {', '.join(names[:12]) or '(none)'}",
        ) from None


def entry_points(section: str) -> dict[str, metadata.EntryPoint]:
    """Names installed packages register for `section` ("model" or "data")."""
    return {ep.name: ep for ep in metadata.entry_points(group=GROUPS[section])}


def load_entry_point(ep: metadata.EntryPoint, section: str) -> Any:
    try:
        return ep.load()
    except Exception as err:
        raise UserError(
            f"{section}.name={ep.name}: the entry point {ep.value} "
            f"(package {ep.dist.name if ep.dist else '?'}) fails to load: "
            f"{type(err).__name__}: {err}",
            hint="reinstall or fix that package",
        ) from err


def accepted(fn: Callable, kwargs: Mapping[str, Any]) -> set[str]:
    """The names in `kwargs` that `fn` takes (all of them if it takes **kwargs)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return set(kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return set(kwargs)
    return {k for k in kwargs if k in params}


def parameters(fn: Callable) -> set[str]:
    """Parameter names of `fn`; a `**kwargs` parameter shows as "**kwargs"."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {f"**{p.name}" if p.kind is p.VAR_KEYWORD else p.name for p in params}
