"""Data from the user's own code: `data._target_: mydata.load` in a recipe, or a name that an
installed package registers under the `dlx.datasets` entry-point group.

The function gets the keys of the `data:` section it takes (and `seed` when it has that
parameter) and returns either a `dlx.Dataset` or a mapping of numpy arrays — `x_train,
y_train[, x_val, y_val], x_test, y_test[, lengths_*]` — which goes through the same checks
as `data=arrays` files: shapes, dtypes, label ranges, NaN/inf; val carved from train when
absent; inputs standardised with the training statistics (data.normalize).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from dlx.data.dataset import SPLITS, Dataset
from dlx.data.mapped import MappedArray
from dlx.errors import DataError


def load_user_data(fn: Callable, where: str, cfg: Mapping[str, Any], seed: int) -> Dataset:
    """Call the user's loader `fn` (named by `where`, e.g. data._target_=mydata.load)."""
    from dlx.config.schema import DataConfig
    from dlx.config.targets import accepted, parameters

    # The section's own keys go to the function; dlx's common keys (path, val_size, ...)
    # only when it names them.
    common = {f.name for f in dataclasses.fields(DataConfig)} | {"task", "_target_"}
    mine = {k: v for k, v in cfg.items() if k not in common}
    takes = parameters(fn)
    kwargs = {k: mine[k] for k in accepted(fn, mine)}
    kwargs.update({k: cfg[k] for k in common & set(cfg) & takes if k != "seed"})
    unknown = sorted(set(mine) - set(kwargs))
    if unknown:
        raise DataError(
            f"data.{unknown[0]} is not a parameter of {where}",
            hint=f"{where} takes: {', '.join(sorted(takes)) or 'no arguments'}",
        )
    if "seed" in takes:
        kwargs["seed"] = seed
    try:
        out = fn(**kwargs)
    except DataError:
        raise
    except Exception as err:
        raise DataError(
            f"{where} failed: {type(err).__name__}: {err}",
            hint="run it on its own in Python to debug it (dlx train --debug shows the trace)",
        ) from err
    if isinstance(out, Dataset):
        check_dataset(out, where)
        return out
    if isinstance(out, Mapping):
        from dlx.data.arrays import NAMES, REQUIRED, from_arrays

        unknown = sorted(set(map(str, out)) - set(NAMES))
        missing = [n for n in REQUIRED if n not in out]
        if unknown or missing:
            raise DataError(
                f"{where} returned "
                + (f"unknown key(s) {', '.join(unknown)}" if unknown else "")
                + (" and " if unknown and missing else "")
                + (f"no {', '.join(missing)}" if missing else ""),
                hint=f"return a mapping with {', '.join(REQUIRED)} (optional: "
                f"{', '.join(n for n in NAMES if n not in REQUIRED)})",
            )
        try:
            arrays = {str(k): np.asarray(v) for k, v in out.items()}
        except Exception as err:
            raise DataError(f"{where} returned values that are not arrays: {err}") from err
        names = {k: f"{where}()[{k!r}]" for k in arrays}
        return from_arrays(
            arrays,
            names,
            cfg,
            seed,
            dataset_name=str(cfg.get("_target_") or cfg.get("name")),
            source=f"{where}()",
        )
    raise DataError(
        f"{where} returned {type(out).__name__}, not a dlx.Dataset or a mapping of arrays",
        hint="return {'x_train': ..., 'y_train': ..., 'x_test': ..., 'y_test': ...} "
        "(numpy arrays) or a dlx.Dataset",
    )


def check_dataset(ds: Dataset, where: str) -> None:
    """A Dataset built by user code: the invariants the engine relies on."""
    for split in SPLITS:
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        on_disk = isinstance(x, MappedArray)  # a loader may return data=mapped's arrays
        if not (isinstance(x, np.ndarray) or on_disk) or not isinstance(y, np.ndarray):
            raise DataError(
                f"{where}: Dataset.x_{split}/y_{split} must be numpy arrays",
                hint="x may also be a dlx.data.mapped.MappedArray (a dataset on disk)",
            )
        if len(x) != len(y):
            raise DataError(
                f"{where}: x_{split} has {len(x)} examples but y_{split} {len(y)}",
                hint="one label per example, in the same order",
            )
        if tuple(x.shape[1:]) != tuple(ds.input_shape):
            raise DataError(
                f"{where}: x_{split} examples are {x.shape[1:]}, input_shape says {ds.input_shape}"
            )
        # On disk, the stored bounds (meta.json) stand for the values: a full scan would read
        # the whole file before the first step.
        values = np.array([x.min(), x.max()]) if on_disk and x.size else x
        if x.dtype.kind == "f" and x.size and not np.isfinite(values).all():
            raise DataError(f"{where}: x_{split} has NaN or inf values")
        if ds.task == "classify" and y.size and (y.min() < 0 or y.max() >= ds.num_classes):
            raise DataError(
                f"{where}: y_{split} has labels {int(y.min())}..{int(y.max())}, outside "
                f"[0, {ds.num_classes})",
                hint="labels must be 0..num_classes-1",
            )
    if len(ds.x_train) == 0:
        raise DataError(f"{where}: the training split is empty")
