"""data=csv: a table of numeric features and one target column, read with the stdlib csv
module (no pandas).

Files: ``data.path`` (one file; a fixed-seed ``data.test_size`` fraction is the test split)
or ``data.train`` + ``data.test``. ``.gz`` files are read too. ``data.target``: the target
column's name, or its position (0 = first, -1 = last, the default); a list of names for
several regression targets. The other columns are the features (or only ``data.features``,
minus ``data.drop``); each must be numeric, and each is standardised with the training
split's mean/std (data.normalize).

Target: under task=regression (or task=auto with non-integer numbers) float targets,
standardised with the train mean/std unless data.normalize_target=false; otherwise class
labels, integers or strings, mapped to sorted class ids (the names are kept in
``Dataset.classes``). Header: auto-detected (a first row with a text field over a number
in the row below it, or all text), or data.header=true/false; files without one name their
columns col0, col1, ... data.skip_rows skips leading lines (e.g. scikit-learn's counts line).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlx.data.config import (
    get_bool,
    get_choice,
    get_fraction,
    get_int,
    get_names,
    requested_task,
)
from dlx.data.dataset import Dataset
from dlx.data.splits import build_dataset, split_indices
from dlx.errors import DataError

log = logging.getLogger(__name__)

TEST_SPLIT_SEED = 0  # data.test_size is cut the same way whatever the run's seed
DELIMITERS = ",;\t| "


class Table:
    """One CSV file: column names and rows of strings (with their line numbers)."""

    def __init__(self, path: Path, names: list[str], rows: list[list[str]], lines: list[int]):
        self.path, self.names, self.rows, self.lines = path, names, rows, lines


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(
            f"{path} does not exist" if not path.exists() else f"{path} is not a file",
            hint="pass a CSV file: data.path=/path/to/table.csv (or data.train= and data.test=)",
        )
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        return raw.decode("utf-8-sig")  # a BOM (Excel's UTF-8 CSV) is not part of the header
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path} is not UTF-8 text ({err.reason} at byte {err.start})",
            hint="save the table as UTF-8 CSV",
        ) from err
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}", hint="check the file") from err


def _delimiter(cfg: Mapping[str, Any], sample: str) -> str:
    given = cfg.get("delimiter")
    if given is not None:
        if not isinstance(given, str) or len(given) != 1:
            raise DataError(
                f"data.delimiter must be one character, got {given!r}",
                hint="e.g. data.delimiter=';' (null: detect it)",
            )
        return given
    lines = [line for line in sample.splitlines() if line.strip()][:20]
    if not lines:
        return ","
    # The delimiter that splits every sampled line into the same number (> 1) of fields.
    for delim in DELIMITERS:
        counts = {
            len(next(csv.reader([line], delimiter=delim, skipinitialspace=delim == " ")))
            for line in lines
        }
        if len(counts) == 1 and counts.pop() > 1:
            return delim
    return ","


def read_table(path: Path, cfg: Mapping[str, Any]) -> Table:
    text = _read_text(path)
    skip = get_int(cfg, "skip_rows", 0, minimum=0) or 0
    body = "".join(text.splitlines(keepends=True)[skip:])
    delim = _delimiter(cfg, body[:65536])
    reader = csv.reader(io.StringIO(body), delimiter=delim, skipinitialspace=delim == " ")
    rows, lines = [], []
    try:
        for row in reader:
            if not row or all(not f.strip() for f in row):
                continue  # blank line
            rows.append([f.strip() for f in row])
            lines.append(reader.line_num + skip)
    except csv.Error as err:
        raise DataError(
            f"{path} line {reader.line_num + skip} is not valid CSV: {err}",
            hint="check the quoting on that line",
        ) from err
    if not rows:
        raise DataError(
            f"{path} is empty" + (f" after data.skip_rows={skip}" if skip else ""),
            hint="the table needs a row per example, columns separated by commas",
        )
    header = get_choice(cfg, "header", "auto", ("auto", True, False))
    if header == "auto":
        first = rows[0]
        second = rows[1] if len(rows) > 1 else None
        texts = [not _is_number(f) for f in first]
        over_number = second is not None and any(
            t and i < len(second) and _is_number(second[i]) for i, t in enumerate(texts)
        )
        header = over_number or all(texts)
    if header:
        names, rows, lines = rows[0], rows[1:], lines[1:]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataError(
                f"{path}: the header names the column(s) {', '.join(map(repr, dupes))} twice",
                hint="give every column its own name",
            )
    else:
        names = [f"col{i}" for i in range(len(rows[0]))]
    if not rows:
        raise DataError(f"{path} has a header but no data rows", hint="add rows of values")
    for row, line in zip(rows, lines, strict=True):
        if len(row) != len(names):
            what = "the header has" if header else f"line {lines[0]} has"
            raise DataError(
                f"{path} line {line} has {len(row)} fields, but {what} {len(names)}",
                hint="every row needs the same columns; if the file starts with lines that "
                "are not the table, skip them with data.skip_rows=N",
            )
    return Table(path, names, rows, lines)


def _column(table: Table, ref: str | int, key: str) -> int:
    if isinstance(ref, int):
        if not -len(table.names) <= ref < len(table.names):
            raise DataError(
                f"data.{key}={ref} is not a column of {table.path} ({len(table.names)} columns)",
                hint=f"use a position from 0 to {len(table.names) - 1}, -1 for the last, or a name",
            )
        return ref % len(table.names)
    if ref not in table.names:
        from dlx.errors import suggest

        raise DataError(
            f"{table.path} has no column {ref!r} (data.{key}).{suggest(ref, table.names)}",
            hint=f"columns: {', '.join(table.names)}",
        )
    return table.names.index(ref)


def _floats(table: Table, col: int, what: str, fix: str) -> np.ndarray:
    out = np.empty(len(table.rows), np.float64)
    name = table.names[col]
    for i, row in enumerate(table.rows):
        value = row[col]
        try:
            number = float(value)
        except ValueError:
            if not value:
                raise DataError(
                    f"{table.path}: {what} column {name!r} has an empty field (a missing "
                    f"value) at line {table.lines[i]}",
                    hint=f"fill in the missing values or remove those rows; or {fix}",
                ) from None
            raise DataError(
                f"{table.path}: {what} column {name!r} is not numeric: line {table.lines[i]} "
                f"has {value!r}",
                hint=fix,
            ) from None
        if not math.isfinite(number):
            raise DataError(
                f"{table.path}: {what} column {name!r} has {value!r} at line {table.lines[i]}",
                hint=f"fill or remove the missing values, or drop the column: data.drop=[{name}]",
            )
        out[i] = number
    return out


def _selection(cfg: Mapping[str, Any], table: Table) -> tuple[list[int], list[int]]:
    """(target columns, feature columns) of ``table``, from data.target/features/drop."""
    target = get_names(cfg, "target") or [-1]
    targets = [_column(table, t, "target") for t in target]
    features_given = get_names(cfg, "features")
    if features_given is not None:
        features = [_column(table, f, "features") for f in features_given]
    else:
        features = [i for i in range(len(table.names)) if i not in targets]
    dropped = {_column(table, d, "drop") for d in get_names(cfg, "drop") or []}
    features = [f for f in features if f not in dropped and f not in targets]
    if not features:
        raise DataError(
            f"{table.path}: no feature columns are left (target "
            f"{', '.join(table.names[t] for t in targets)})",
            hint="keep at least one numeric column besides the target (data.features / data.drop)",
        )
    return targets, features


def _features(table: Table, features: list[int]) -> np.ndarray:
    cols = []
    for col in features:
        name = table.names[col]
        fix = f"drop it with data.drop=[{name}], or choose the features with data.features=[...]"
        cols.append(_floats(table, col, "feature", fix))
    return np.stack(cols, axis=1)


def _is_integral(values: Sequence[str]) -> bool:
    try:
        return all(float(v).is_integer() for v in values)
    except (ValueError, OverflowError):
        return False


def load_csv(cfg: Mapping[str, Any], seed: int) -> Dataset:
    tables = _tables(cfg)
    first = tables[0]
    targets, features = _selection(cfg, first)
    names = [first.names[i] for i in features]
    target_names = [first.names[t] for t in targets]
    for other in tables[1:]:  # the test file: the same columns, by name
        missing = [n for n in [*names, *target_names] if n not in other.names]
        if missing:
            raise DataError(
                f"{other.path} has no column(s) {', '.join(map(repr, missing))} "
                f"that {first.path} has",
                hint="the train and test files need the same columns (and header)",
            )
    selections = [(targets, features)] + [
        ([o.names.index(n) for n in target_names], [o.names.index(n) for n in names])
        for o in tables[1:]
    ]
    xs = [_features(t, f) for t, (_, f) in zip(tables, selections, strict=True)]

    task = requested_task(cfg)
    raw = [
        [[row[c] for c in tc] for row in t.rows]
        for t, (tc, _) in zip(tables, selections, strict=True)
    ]
    if task == "auto":
        values = [v for table in raw for row in table for v in row]
        numeric = all(_is_number(v) for v in values)
        task = "regress" if numeric and not _is_integral(values) else "classify"
    classes: tuple[str, ...] | None = None
    if task == "regress":
        fix = "regression targets must be numbers: fill or drop those rows"
        ys = [
            np.stack([_floats(t, c, "target", fix) for c in tc], axis=1)
            for t, (tc, _) in zip(tables, selections, strict=True)
        ]
        ys = [y[:, 0] if y.shape[1] == 1 else y for y in ys]
        num_classes = len(targets)
        note = f"regression on {', '.join(map(repr, target_names))}"
    else:
        if len(targets) != 1:
            raise DataError(
                f"data.target names {len(targets)} columns; classification takes one",
                hint="name one label column, or train a regression with task=regression",
            )
        labels = [[row[0] for row in table] for table in raw]
        ys, classes = _class_ids(tables, labels, targets[0])
        num_classes = len(classes)
        rows = sum(len(t.rows) for t in tables)
        if requested_task(cfg) == "auto" and num_classes > max(20, rows // 10):
            log.warning(
                "%s: the target %r has %d distinct values in %d rows: trained as classes; "
                "for a regression pass task=regression",
                first.path,
                target_names[0],
                num_classes,
                rows,
            )
        note = f"classes of {target_names[0]!r}: {', '.join(classes[:20])}"
        note += ", ..." if len(classes) > 20 else ""

    if len(tables) == 1:
        test_size = get_fraction(cfg, "test_size", 0.2)
        n = len(ys[0])
        count = max(1, round(test_size * n))
        if count >= n:
            raise DataError(
                f"{first.path} has {n} rows: too few to split off a test set",
                hint="add rows, or pass separate data.train and data.test files",
            )
        rest, held = split_indices(n, count, TEST_SPLIT_SEED)
        train = {"x": xs[0][rest], "y": ys[0][rest]}
        test = {"x": xs[0][held], "y": ys[0][held]}
        where = f"{first.path} ({len(rest)} train / {len(held)} test rows)"
    else:
        train, test = {"x": xs[0], "y": ys[0]}, {"x": xs[1], "y": ys[1]}
        where = f"{first.path} + {tables[1].path}"
    return build_dataset(
        "csv",
        cfg,
        seed,
        train=train,
        test=test,
        val_default=0.1,
        num_classes=num_classes,
        source=f"{where}; {len(names)} features; {note}",
        task=task if task == "regress" else "classify",
        per_channel=True,
        normalize_target=get_bool(cfg, "normalize_target", True),
        classes=classes,
    )


def _tables(cfg: Mapping[str, Any]) -> list[Table]:
    path, train, test = cfg.get("path"), cfg.get("train"), cfg.get("test")
    for key, value in (("path", path), ("train", train), ("test", test)):
        if value is not None and (not isinstance(value, str) or not value):
            raise DataError(
                f"data.{key} must be a CSV file path, got {value!r}",
                hint=f"data.{key}=/path/to/table.csv",
            )
    if path is not None and (train is not None or test is not None):
        raise DataError(
            "data.path and data.train/data.test are both set",
            hint="pass one table as data.path (test split by data.test_size), or the two "
            "files as data.train and data.test (and data.path=null)",
        )
    if path is not None:
        return [read_table(Path(path).expanduser(), cfg)]
    if train is not None and test is not None:
        return [read_table(Path(p).expanduser(), cfg) for p in (train, test)]
    raise DataError(
        "data=csv needs a table: data.path (or both data.train and data.test) is not set",
        hint="dlx train data=csv data.path=/path/to/table.csv data.target=<label column>",
    )


def _class_ids(
    tables: list[Table], labels: list[list[str]], col: int
) -> tuple[list[np.ndarray], tuple[str, ...]]:
    """Labels -> ids of the sorted classes (numerically when every label is an integer)."""
    values = sorted({v for table in labels for v in table})
    if "" in values:
        for table, column in zip(tables, labels, strict=True):
            if "" in column:
                line = table.lines[column.index("")]
                raise DataError(
                    f"{table.path}: the target column {table.names[col]!r} is empty at line {line}",
                    hint="give every row a label, or remove the unlabelled rows",
                )
    if _is_integral(values):
        by_number = sorted(values, key=float)
        keys = list(dict.fromkeys(str(int(float(v))) for v in by_number))
        ids = {v: keys.index(str(int(float(v)))) for v in values}
        classes = tuple(keys)
    elif all(_is_number(v) for v in values):
        raise DataError(
            f"{tables[0].path}: the target column {tables[0].names[col]!r} has non-integer "
            f"numbers (e.g. {next(v for v in values if not float(v).is_integer())!r}), "
            "but the task is classification",
            hint="train a regression with task=regression, or use integer/text labels",
        )
    else:
        ids = {v: i for i, v in enumerate(values)}
        classes = tuple(values)
    return [np.array([ids[v] for v in column], np.int64) for column in labels], classes
