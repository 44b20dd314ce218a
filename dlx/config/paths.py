"""Where configs live: the user's folders first, then the ones shipped with dlx."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent.parent


def packaged_dir(kind: str) -> Path:
    """`conf` or `recipes` shipped with dlx: inside the wheel, or at the repo root when editable."""
    inside_wheel = _PKG / "_configs" / kind
    return inside_wheel if inside_wheel.is_dir() else _PKG.parent / kind


def recipe_dirs(config_dir: Path | None = None) -> list[Path]:
    """Folders searched for `<recipe>.yaml`, first match wins."""
    dirs = []
    if config_dir is not None:
        dirs += [config_dir / "recipes", config_dir]
    dirs += [Path.cwd() / "recipes", packaged_dir("recipes")]
    seen, out = set(), []
    for d in dirs:
        d = d.resolve()
        if d.is_dir() and d not in seen:
            seen.add(d)
            out.append(d)
    return out


def conf_dirs(config_dir: Path | None = None) -> list[Path]:
    """Config-group roots (data/, model/, ...), first match wins."""
    dirs = [config_dir] if config_dir is not None else []
    dirs.append(packaged_dir("conf"))
    return [d.resolve() for d in dirs if d.is_dir()]


def find_recipes(config_dir: Path | None = None) -> dict[str, Path]:
    """Every recipe name -> its file, earlier folders shadowing later ones."""
    found: dict[str, Path] = {}
    for d in reversed(recipe_dirs(config_dir)):
        for f in sorted(d.glob("*.yaml")):
            if f.stem != "dlx":
                found[f.stem] = f
    return dict(sorted(found.items()))


def recipe_description(path: Path) -> str:
    """The first comment line of a recipe file: its one-line description."""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line:
            break
    return ""


def cache_root() -> Path:
    """dlx's cache folder (compiled programs, datasets): $DLX_CACHE, else ~/.cache/dlx."""
    import os

    return Path(os.environ.get("DLX_CACHE") or Path.home() / ".cache" / "dlx").expanduser()
