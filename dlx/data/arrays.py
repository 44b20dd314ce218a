"""data=arrays: your own numpy arrays, from one ``.npz`` or a folder of ``.npy`` files.

Names: x_train, y_train, x_test, y_test (required); x_val, y_val (optional: else
data.val_size of train is held out by the seed); lengths_train, lengths_val, lengths_test
(padded sequences: x is (N, T, ...) and lengths (N,) in [1, T] say how many steps are
real; they go to ``Dataset.extra["lengths"]``); classes (optional: the class names, a
string array). Files are read with ``allow_pickle=False``: object arrays are refused, never
unpickled.

Checks, each failing with one message naming the array and its file: numeric dtypes,
integer labels for classification (float y means regression under task=auto), the same N
for x, y and lengths, the same example shape in every split, labels in [0, num_classes)
(num_classes from data.num_classes, else the classes array, else max label + 1), no NaN or
inf, lengths in [1, T].
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dlx.data.config import get_bool, get_int, get_path, requested_task
from dlx.data.dataset import SPLITS, Dataset
from dlx.data.splits import build_dataset
from dlx.errors import DataError

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("x_val", "y_val", "lengths_train", "lengths_val", "lengths_test", "classes")
NAMES = REQUIRED + OPTIONAL
SAVE_HINT = (
    "save them with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...) "
    "(optional: x_val, y_val, lengths_train/_val/_test, classes), or as <name>.npy files "
    "in one folder"
)


def first_index(mask: np.ndarray) -> tuple[int, ...] | int:
    """The first index where ``mask`` is true, as an int (1-D) or a tuple."""
    idx = tuple(int(i) for i in np.argwhere(mask)[0])
    return idx[0] if len(idx) == 1 else idx


def _load_one(load: Any, where: str) -> np.ndarray:
    try:
        return np.asarray(load())
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise DataError(
                f"{where} holds Python objects (an object array), which dlx never unpickles",
                hint="save plain numeric arrays, e.g. np.asarray(x, dtype=np.float32); ragged "
                "sequences as one padded array plus lengths_<split>",
            ) from err
        raise DataError(f"cannot read {where}: {err}", hint=SAVE_HINT) from err
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"cannot read {where}: {err}", hint=SAVE_HINT) from err


def read_arrays(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """({name: array}, {name: where it came from, for messages}) of a .npz or .npy folder."""
    arrays: dict[str, np.ndarray] = {}
    where: dict[str, str] = {}
    if path.is_dir():
        for file in sorted(path.glob("*.npy")):
            where[file.stem] = str(file)
            arrays[file.stem] = _load_one(lambda f=file: np.load(f, allow_pickle=False), str(file))
        if not arrays:
            raise DataError(f"data.path={path} is a folder without .npy files", hint=SAVE_HINT)
    elif path.is_file():
        try:
            npz = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            # numpy takes bytes that are neither .npz nor .npy for a pickle: never loaded here.
            why = "not .npz or .npy data" if "pickle" in str(err) else str(err)
            raise DataError(
                f"data.path={path} is not a readable .npz file ({why})", hint=SAVE_HINT
            ) from err
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise DataError(
                f"data.path={path} holds one array, not named arrays",
                hint="pass a .npz with x_train, y_train, x_test, y_test, or a folder of "
                "x_train.npy, y_train.npy, ...",
            )
        with npz:
            for key in npz.files:
                where[key] = f"{key} in {path}"
                arrays[key] = _load_one(lambda k=key: npz[k], where[key])
    else:
        raise DataError(
            f"data.path={path} does not exist",
            hint="pass a .npz file or a folder of .npy files (x_train, y_train, ...)",
        )
    unknown = sorted(set(arrays) - set(NAMES))
    if unknown:
        raise DataError(
            f"data.path={path} has array(s) dlx does not know: {', '.join(unknown)}",
            hint=f"name the arrays {', '.join(NAMES)} (remove or rename the others)",
        )
    missing = [n for n in REQUIRED if n not in arrays]
    if missing:
        raise DataError(
            f"data.path={path} has no {', '.join(missing)} (found: {', '.join(sorted(arrays))})",
            hint=SAVE_HINT,
        )
    return arrays, where


def _check_numeric(a: np.ndarray, where: str) -> None:
    if a.dtype.kind not in "biuf":
        raise DataError(
            f"{where} has dtype {a.dtype}: expected numbers",
            hint="convert it to a numeric array, e.g. np.asarray(x, dtype=np.float32); "
            "string labels: map them to 0..K-1 and save the names as `classes`",
        )


def _check_finite(a: np.ndarray, where: str) -> None:
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a)
        if bad.any():
            idx = first_index(bad)
            raise DataError(
                f"{where} has {a[idx]} at index {idx} ({int(bad.sum())} non-finite values)",
                hint="replace or drop the NaN/inf entries before saving, e.g. "
                "np.nan_to_num(x) or x[np.isfinite(x).all(axis=...)]",
            )


def load_arrays(cfg: Mapping[str, Any], seed: int) -> Dataset:
    path = get_path(cfg, "path", "a .npz file or a folder of .npy files")
    arrays, where = read_arrays(path)
    return from_arrays(
        arrays,
        where,
        cfg,
        seed,
        dataset_name="arrays",
        source=f"data.path {path}",
        origin=f"data.path={path}",
    )


def from_arrays(
    arrays: Mapping[str, np.ndarray],
    where: Mapping[str, str],
    cfg: Mapping[str, Any],
    seed: int,
    *,
    dataset_name: str,
    source: str,
    origin: str | None = None,
) -> Dataset:
    """A Dataset from named arrays (x_train, y_train, ...: see the module doc), checked;
    `where` names each array's origin for messages (its file, or a user loader's return
    value), `origin` the whole set."""
    origin = origin or source
    splits = [s for s in SPLITS if f"x_{s}" in arrays or f"y_{s}" in arrays]
    for split in splits:
        for kind in ("x", "y"):
            if f"{kind}_{split}" not in arrays:
                other = "y" if kind == "x" else "x"
                raise DataError(
                    f"{origin} has {other}_{split} but no {kind}_{split}",
                    hint=f"save both x_{split} and y_{split}, or neither (val is then carved "
                    "from train by data.val_size)",
                )
    with_lengths = [s for s in splits if f"lengths_{s}" in arrays]
    if with_lengths and with_lengths != splits:
        missing = [f"lengths_{s}" for s in splits if s not in with_lengths]
        raise DataError(
            f"{origin} has lengths for {', '.join(with_lengths)} but not {', '.join(missing)}",
            hint="give lengths_<split> for every split (all padded the same way), or none",
        )
    orphans = [f"lengths_{s}" for s in SPLITS if f"lengths_{s}" in arrays and s not in splits]
    if orphans:
        raise DataError(
            f"{origin} has {', '.join(orphans)} without the split's x and y",
            hint="remove it, or save x_val and y_val too",
        )

    tokens = get_bool(cfg, "tokens", False)
    task = requested_task(cfg)
    y_train = arrays["y_train"]
    if task == "auto":
        task = "regress" if y_train.dtype.kind == "f" else "classify"
    regress = task == "regress"

    example_shape = None
    for split in splits:
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        wx, wy = where[f"x_{split}"], where[f"y_{split}"]
        _check_numeric(x, wx)
        _check_numeric(y, wy)
        if x.ndim < 2:
            raise DataError(
                f"{wx} has shape {x.shape}: expected (N, ...) examples with at least one "
                "feature each",
                hint="one feature per example: save x[:, None]",
            )
        if example_shape is None:
            example_shape = x.shape[1:]
        elif x.shape[1:] != example_shape:
            raise DataError(
                f"{wx} has examples of shape {x.shape[1:]} but x_train's are {example_shape}",
                hint="every split needs the same example shape (pad sequences to one length "
                "and give lengths_<split>)",
            )
        if len(y) != len(x):
            raise DataError(
                f"{wy} has {len(y)} entries but {wx} has {len(x)} examples",
                hint=f"x_{split} and y_{split} need one entry per example, in the same order",
            )
        if tokens and x.dtype.kind not in "iub":
            raise DataError(
                f"{wx} has dtype {x.dtype}, but data.tokens=true needs integer token ids",
                hint="save integer ids (0 = padding), or set data.tokens=false for features",
            )
        _check_finite(x, wx)
        if regress:
            _check_finite(y, wy)
            if y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1:] != y_train.shape[1:]):
                raise DataError(
                    f"{wy} has shape {y.shape}: regression targets must be (N,) or (N, k) "
                    f"like y_train {y_train.shape}",
                    hint="save one row of k targets per example",
                )
        else:
            if y.dtype.kind not in "iub":
                raise DataError(
                    f"{wy} has dtype {y.dtype}, but classification labels must be integers",
                    hint="save the labels as integers 0..K-1 (y.astype(np.int64)), or train a "
                    "regression on float targets with task=regression",
                )
            if y.ndim != 1:
                raise DataError(
                    f"{wy} has shape {y.shape}: classification labels must be (N,)",
                    hint="save one integer label per example (y.reshape(-1) for (N, 1))",
                )
            if y.size and int(y.min()) < 0:
                idx = first_index(y < 0)
                raise DataError(
                    f"{wy} has the negative label {y[idx]} at index {idx}",
                    hint="labels must be 0..K-1: map your classes to those ids",
                )
        name = f"lengths_{split}"
        if name in arrays:
            _check_lengths(arrays[name], where[name], x, wx)

    classes = _classes(arrays, where) if "classes" in arrays else None
    if regress:
        num_classes = 1 if y_train.ndim == 1 else int(y_train.shape[1])
        note = f"regression, {num_classes} target(s)"
    else:
        num_classes, note = _num_classes(cfg, arrays, where, splits, classes)

    def split_arrays(split: str) -> dict[str, np.ndarray]:
        out = {"x": arrays[f"x_{split}"], "y": arrays[f"y_{split}"]}
        if f"lengths_{split}" in arrays:
            out["lengths"] = arrays[f"lengths_{split}"]
        return out

    return build_dataset(
        dataset_name,
        cfg,
        seed,
        train=split_arrays("train"),
        val=split_arrays("val") if "val" in splits else None,
        test=split_arrays("test"),
        val_default=0.1,
        num_classes=num_classes,
        source=f"{source}; {note}",
        task="regress" if regress else "classify",
        per_channel=get_bool(cfg, "per_feature", False),
        normalize_target=get_bool(cfg, "normalize_target", True),
        tokens=tokens,
        classes=classes,
    )


def _check_lengths(lengths: np.ndarray, where: str, x: np.ndarray, wx: str) -> None:
    if lengths.dtype.kind not in "iu" or lengths.ndim != 1:
        raise DataError(
            f"{where} has dtype {lengths.dtype} and shape {lengths.shape}: expected (N,) integers",
            hint="save the number of real steps of each sequence as integers",
        )
    if len(lengths) != len(x):
        raise DataError(
            f"{where} has {len(lengths)} entries but {wx} has {len(x)} examples",
            hint="one length per example, in the same order as x",
        )
    steps = x.shape[1]
    bad = (lengths < 1) | (lengths > steps)
    if bad.any():
        idx = first_index(bad)
        raise DataError(
            f"{where} has the length {lengths[idx]} at index {idx}, outside [1, {steps}] "
            f"(x is padded to {steps} steps)",
            hint="each length counts the real steps of its sequence: at least 1, at most T",
        )


def _classes(arrays: Mapping[str, np.ndarray], where: Mapping[str, str]) -> tuple[str, ...]:
    names = arrays["classes"]
    if names.dtype.kind not in "US" or names.ndim != 1:
        raise DataError(
            f"{where['classes']} has dtype {names.dtype} and shape {names.shape}: expected "
            "a 1-D array of class names",
            hint="save np.array(['cat', 'dog', ...]) (id i -> name i), or leave it out",
        )
    return tuple(str(n.decode() if isinstance(n, bytes) else n) for n in names)


def _num_classes(
    cfg: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    where: Mapping[str, str],
    splits: list[str],
    classes: tuple[str, ...] | None,
) -> tuple[int, str]:
    given = get_int(cfg, "num_classes", None, minimum=1)
    top = max((int(arrays[f"y_{s}"].max()) for s in splits if arrays[f"y_{s}"].size), default=0)
    if given is not None:
        count, why = given, f"data.num_classes={given}"
    elif classes is not None:
        count, why = len(classes), f"{len(classes)} names in classes"
    else:
        return top + 1, f"num_classes {top + 1} (max label + 1)"
    for split in splits:
        y = arrays[f"y_{split}"]
        if y.size and int(y.max()) >= count:
            idx = first_index(y >= count)
            raise DataError(
                f"{where[f'y_{split}']} has the label {y[idx]} at index {idx}, outside "
                f"[0, {count}) ({why})",
                hint=f"labels must be 0..{count - 1}; or set data.num_classes={top + 1} "
                "(max label + 1)",
            )
    if classes is not None and len(classes) != count:
        raise DataError(
            f"{where['classes']} names {len(classes)} classes but {why}",
            hint="make the classes array one name per class id",
        )
    return count, f"num_classes {count} ({why})"
