"""data=image_folder: a folder of PNG/JPEG images, one sub-folder per class.

Layouts: ``<path>/<class>/*.png|jpg|jpeg`` (a fixed-seed data.test_size fraction is the test
split), or ``<path>/train/<class>/...`` + ``<path>/test/<class>/...``. Class ids follow the
sorted class folder names (kept in ``Dataset.classes``). Images are decoded with Pillow,
converted to grey or RGB (data.channels 1|3, default: the first image's), resized to
data.image_size [H, W] (default: the first image's size), scaled to [0, 1], then standardised
per channel with the training split's mean/std (data.normalize).

Decoded arrays are cached as one .npz in ``<cache>/image_folder/``, keyed by the list of
files with their sizes and modification times and by the options: a changed, added or
removed image decodes the folder again. Hidden files and other extensions are ignored.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dlx.data.cachefile import write_atomic
from dlx.data.config import cache_dir, get_choice, get_fraction, get_path
from dlx.data.dataset import Dataset
from dlx.data.splits import build_dataset, split_indices
from dlx.errors import DataError

log = logging.getLogger(__name__)

EXTENSIONS = (".png", ".jpg", ".jpeg")
TEST_SPLIT_SEED = 0
CACHE_VERSION = 1  # bump when the decoding changes, so old cache files are not reused
LAYOUT = (
    "expected <folder>/<class name>/<image>.png|.jpg (one sub-folder per class), or "
    "<folder>/train/<class name>/... and <folder>/test/<class name>/..."
)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and _visible(p))


def _images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in EXTENSIONS and p.is_file() and _visible(p)
    )


def scan(root: Path) -> tuple[dict[str, list[tuple[Path, int]]], tuple[str, ...]]:
    """({split: [(image path, class id)]}, class names); split "all" for the one-folder
    layout, "train" and "test" for the other."""
    if not root.is_dir():
        raise DataError(
            f"data.path={root} is not a folder" if root.exists() else f"{root} does not exist",
            hint=LAYOUT,
        )
    names = {p.name for p in _class_folders(root)}
    split_roots = (
        {"train": root / "train", "test": root / "test"}
        if {"train", "test"} <= names
        else {"all": root}
    )
    per_split = {s: _class_folders(r) for s, r in split_roots.items()}
    main = per_split.get("train", per_split.get("all", []))
    if not main:
        loose = [p.name for p in _images(root) if p.parent == root]
        more = ", ..." if len(loose) > 3 else ""
        found = f" (it holds images directly: {', '.join(loose[:3])}{more})" if loose else ""
        raise DataError(f"{root} has no class sub-folders{found}", hint=LAYOUT)
    classes = tuple(p.name for p in main)
    out: dict[str, list[tuple[Path, int]]] = {}
    for split, folders in per_split.items():
        unknown = [p for p in folders if p.name not in classes]
        if unknown:
            raise DataError(
                f"{unknown[0]} is a class folder of the test split that train/ does not have",
                hint=f"the classes come from {root / 'train'} ({', '.join(classes)}): add it "
                "there or remove it from test/",
            )
        items: list[tuple[Path, int]] = []
        for folder in folders:
            images = _images(folder)
            if not images:
                raise DataError(
                    f"the class folder {folder} has no images (.png, .jpg, .jpeg)",
                    hint="put at least one image in it, or remove the folder",
                )
            items += [(p, classes.index(folder.name)) for p in images]
        out[split] = items
    return out, classes


def _open(path: Path) -> Any:
    from PIL import Image

    try:
        image = Image.open(path)
        image.load()
    except Exception as err:  # Pillow raises many kinds: UnidentifiedImageError, OSError, ...
        raise DataError(
            f"cannot decode the image {path}: {type(err).__name__}: {err}",
            hint="re-export it as PNG or JPEG, or remove it from the folder",
        ) from err
    return image


def _decode(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    from PIL import Image

    image = _open(path)
    try:
        if image.mode in ("I;16", "I;16B", "I", "F") and channels == 1:
            array = np.asarray(image, dtype=np.float64)
            top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
            image = Image.fromarray(np.clip(array / top * 255, 0, 255).astype(np.uint8))
        image = image.convert("L" if channels == 1 else "RGB")
        if image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
    except Exception as err:
        raise DataError(
            f"cannot convert the image {path}: {type(err).__name__}: {err}",
            hint="re-export it as 8-bit PNG or JPEG, or remove it from the folder",
        ) from err
    return array.reshape(size[0], size[1], channels)


def _first_image_settings(path: Path) -> tuple[tuple[int, int], int]:
    image = _open(path)
    grey = image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "F")
    if image.mode == "P":  # a palette image is grey when every colour it uses is
        rgb = np.asarray(image.convert("RGB"))
        grey = bool((rgb == rgb[..., :1]).all())
    return (image.height, image.width), 1 if grey else 3


def _size_option(cfg: Mapping[str, Any]) -> tuple[int, int] | None:
    value = cfg.get("image_size")
    if value is None:
        return None
    items = list(value) if isinstance(value, (list, tuple)) else [value, value]
    if len(items) != 2 or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in items
    ):
        raise DataError(
            f"data.image_size must be [height, width] in pixels, got {value!r}",
            hint="e.g. data.image_size=[32,32] (null: the first image's size)",
        )
    return int(items[0]), int(items[1])


def _cache_key(items: Mapping[str, list[tuple[Path, int]]], root: Path, extra: dict) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"v": CACHE_VERSION, "root": str(root.resolve()), **extra}).encode())
    for split, entries in sorted(items.items()):
        for path, label in entries:
            st = path.stat()
            line = f"{split}\0{path.relative_to(root)}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n"
            digest.update(line.encode())
    return digest.hexdigest()[:32]


def _decoded(
    root: Path, cfg: Mapping[str, Any]
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...], str]:
    items, classes = scan(root)
    first = next(iter(items.values()))[0][0]
    size, channels = _size_option(cfg), get_choice(cfg, "channels", None, (1, 3))
    if size is None or channels is None:
        first_size, first_channels = _first_image_settings(first)
        size = size or first_size
        channels = channels or first_channels
    key = _cache_key(items, root, {"size": size, "channels": channels, "classes": classes})
    cached = cache_dir(cfg) / "image_folder" / f"{key}.npz"
    splits = sorted(items)
    if cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as npz:
                arrays = {s: (npz[f"x_{s}"], npz[f"y_{s}"]) for s in splits}
            return arrays, classes, f"cache {cached}"
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
            log.warning("ignoring the unreadable cache file %s (%s)", cached, err)
    total = sum(len(v) for v in items.values())
    log.info("decoding %d images from %s to %dx%dx%d", total, root, *size, channels)
    arrays = {}
    for split in splits:
        x = np.empty((len(items[split]), *size, channels), np.uint8)
        for i, (path, _) in enumerate(items[split]):
            x[i] = _decode(path, size, channels)
        y = np.array([label for _, label in items[split]], np.int64)
        arrays[split] = (x, y)
    buffer = io.BytesIO()
    flat = {f"x_{s}": x for s, (x, _) in arrays.items()}
    flat.update({f"y_{s}": y for s, (_, y) in arrays.items()})
    np.savez(buffer, **flat)
    write_atomic(cached, buffer.getvalue())
    return arrays, classes, f"decoded, saved to cache {cached}"


def load_image_folder(cfg: Mapping[str, Any], seed: int) -> Dataset:
    root = get_path(cfg, "path", "a folder of class sub-folders of images", hint=LAYOUT)
    arrays, classes, how = _decoded(root, cfg)
    if "all" in arrays:
        x, y = arrays["all"]
        count = max(1, round(get_fraction(cfg, "test_size", 0.2) * len(y)))
        if count >= len(y):
            raise DataError(
                f"{root} has {len(y)} images: too few to split off a test set",
                hint="add images, or give train/ and test/ sub-folders",
            )
        rest, held = split_indices(len(y), count, TEST_SPLIT_SEED)
        train, test = (x[rest], y[rest]), (x[held], y[held])
    else:
        train, test = arrays["train"], arrays["test"]
    h, w, c = train[0].shape[1:]
    return build_dataset(
        "image_folder",
        cfg,
        seed,
        train=train,
        test=test,
        val_default=0.1,
        num_classes=len(classes),
        scale=255.0,
        per_channel=True,
        source=f"data.path {root} ({how}); {len(classes)} classes, {h}x{w}x{c}",
        classes=classes,
    )
