"""Writing a data=mapped folder (layout: dlx/data/mapped.py) in bounded memory.

`ShardWriter` takes chunks of examples (`add(split, x, y[, lengths])`, any size) and writes
fixed-size `.npy` shards as they fill, so memory holds about one shard; `write` does that for
whole arrays (numpy arrays or `np.load(f, mmap_mode="r")` memmaps); `main` is the
`python -m dlx.data.mapped pack SRC DIR` command for a `data=arrays` .npz / .npy folder.

Every chunk is checked as it arrives (numbers, finite x, one example shape and dtype, one
label per example), because the loader never reads x whole. `meta.json` is written last,
atomically: a folder without it is one a writer did not finish, and the loader says so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from dlx.data.dataset import SPLITS
from dlx.errors import DataError, UserError

FORMAT, VERSION = "dlx-mapped", 1  # meta.json's; dlx/data/mapped.py reads them
SHARD_BYTES = 256 * 2**20  # of x per shard by default: few files, each a few seconds to copy


def shard_name(kind: str, index: int) -> str:
    return f"{kind}-{index:05d}.npy"


class _Moments:
    """Mean and std of every value added, in bounded memory: exact (counts by value) for
    8/16-bit integers, float64 (Chan et al.'s pairwise combination) for everything else."""

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None  # by value + 2**15, for small integers
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, values: np.ndarray) -> None:
        v = values.reshape(-1)
        if v.dtype.kind in "iub" and v.dtype.itemsize <= 2:
            c = np.bincount((v.astype(np.int32) + 2**15), minlength=2**16)
            self.counts = c if self.counts is None else self.counts + c
            return
        for start in range(0, len(v), 2**22):
            part = v[start : start + 2**22].astype(np.float64)
            n, mean = len(part), float(part.mean()) if len(part) else 0.0
            m2 = float(((part - mean) ** 2).sum())
            total = self.n + n
            if total:
                delta = mean - self.mean
                self.mean += delta * n / total
                self.m2 += m2 + delta * delta * self.n * n / total
                self.n = total

    def result(self) -> tuple[float, float]:
        if self.counts is not None:
            values = np.arange(2**16, dtype=np.int64) - 2**15
            n = int(self.counts.sum())
            s = int((self.counts * values).sum())
            s2 = sum(int(c) * int(v) ** 2 for c, v in zip(self.counts, values, strict=True) if c)
            if not n:
                return 0.0, 1.0
            return s / n, math.sqrt(Fraction(n * s2 - s * s, n * n))
        if not self.n:
            return 0.0, 1.0
        return self.mean, math.sqrt(self.m2 / self.n)


class _Split:
    def __init__(self, root: Path) -> None:
        self.dir = root
        self.pending: dict[str, list[np.ndarray]] = {}
        self.pending_rows = 0
        self.shards: list[int] = []
        self.rows = 0
        self.lo: Any = None
        self.hi: Any = None
        self.y_max = -1
        self.kinds: tuple[str, ...] | None = None


class ShardWriter:
    """Write a mapped dataset chunk by chunk::

        with ShardWriter("/data/big", num_classes=10, scale=255.0) as w:
            for x, y in chunks("train"):
                w.add("train", x, y)          # x (n, *example) any numeric dtype, y (n,)
            w.add("test", x_test, y_test)

    `normalize`: "auto" (the train split's mean/std after `/ scale`, padding excluded), a
    (mean, std) pair (scalars, or one per entry of the last axis), or None (only scaled).
    `tokens`: x are int token ids, never scaled. `num_classes`: else from `classes`, else
    max label + 1. Leaving the `with` block by an exception writes no meta.json.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        num_classes: int | None = None,
        task: str = "classify",
        scale: float = 1.0,
        normalize: str | Sequence[Any] | None = "auto",
        tokens: bool = False,
        classes: Sequence[str] | None = None,
        shard_rows: int | None = None,
        shard_bytes: int = SHARD_BYTES,
        name: str | None = None,
        overwrite: bool = False,
    ) -> None:
        if task not in ("classify", "regress"):
            raise DataError(f"task must be classify or regress, got {task!r}")
        if not (normalize is None or normalize == "auto" or len(normalize) == 2):
            raise DataError(f"normalize must be 'auto', None or (mean, std), got {normalize!r}")
        if shard_rows is not None and shard_rows < 1:
            raise DataError(f"shard_rows must be a positive integer, got {shard_rows!r}")
        self.root = Path(path).expanduser()
        self._prepare(overwrite)
        self.task, self.scale, self.normalize, self.tokens = task, scale, normalize, tokens
        self.num_classes, self.classes, self.name = num_classes, classes, name
        self.shard_rows, self.shard_bytes = shard_rows, shard_bytes
        self.example: tuple[int, ...] | None = None
        self.x_dtype: np.dtype | None = None
        self.y_shape: tuple[int, ...] | None = None
        self.moments = _Moments()
        self.splits: dict[str, _Split] = {}

    def _prepare(self, overwrite: bool) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise DataError(f"{self.root} exists and is not a folder")
        if self.root.is_dir() and any(self.root.iterdir()):
            if not overwrite:
                raise DataError(
                    f"{self.root} is not empty", hint="pick a new folder, or pass overwrite=True"
                )
            for entry in ("meta.json", *SPLITS):  # only what a writer makes
                p = self.root / entry
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is None:
            self.close()

    def add(self, split: str, x: Any, y: Any, lengths: Any = None) -> None:
        """Append examples to `split` (train, val or test)."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}", hint=f"one of {', '.join(SPLITS)}")
        x, y = np.asarray(x), np.asarray(y)
        where = f"{split} examples {self.splits[split].rows if split in self.splits else 0}+"
        self._check(x, y, lengths, where)
        s = self.splits.setdefault(split, _Split(self.root / split))
        kinds = ("x", "y") + (("lengths",) if lengths is not None else ())
        if s.kinds is not None and kinds != s.kinds:
            raise DataError(f"{where}: lengths given for some chunks of {split} but not others")
        s.kinds = kinds
        if len(x) == 0:
            return
        lengths = None if lengths is None else np.asarray(lengths)
        if split == "train" and self.normalize == "auto" and not self.tokens:
            self.moments.add(x if lengths is None else x[_steps_mask(x, lengths)])
        lo, hi = x.min(), x.max()
        s.lo = lo if s.lo is None else min(s.lo, lo)
        s.hi = hi if s.hi is None else max(s.hi, hi)
        if self.task == "classify":
            s.y_max = max(s.y_max, int(y.max()))
        for kind, a in zip(kinds, (x, y, lengths), strict=False):
            s.pending.setdefault(kind, []).append(a)
        s.pending_rows += len(x)
        per = self.rows_per_shard(x)
        while s.pending_rows >= per:
            self._flush(s, per)

    def _check(self, x: np.ndarray, y: np.ndarray, lengths: Any, where: str) -> None:
        if x.dtype.kind not in "biuf" or x.ndim < 2:
            raise DataError(
                f"{where}: x is {x.dtype} {x.shape}; expected numbers (N, ...)",
                hint="one feature per example: x[:, None]",
            )
        if self.example is None:
            self.example, self.x_dtype = x.shape[1:], x.dtype
        elif x.shape[1:] != self.example or x.dtype != self.x_dtype:
            raise DataError(
                f"{where}: examples of shape {x.shape[1:]} {x.dtype}, but the first chunk's "
                f"were {self.example} {self.x_dtype}",
                hint="every split needs one example shape and dtype (pad sequences and add "
                "lengths; cast with x.astype(...))",
            )
        if len(y) != len(x):
            raise DataError(
                f"{where}: {len(y)} labels for {len(x)} examples",
                hint="one label per example, in the same order",
            )
        if self.y_shape is None:
            self.y_shape = y.shape[1:]
        elif y.shape[1:] != self.y_shape:
            raise DataError(
                f"{where}: labels of shape {y.shape[1:]}, the first chunk's were {self.y_shape}"
            )
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise DataError(
                f"{where}: x has NaN or inf values",
                hint="replace or drop them first, e.g. np.nan_to_num(x)",
            )
        if self.task == "classify":
            if y.dtype.kind not in "iu" or y.ndim != 1:
                raise DataError(
                    f"{where}: labels are {y.dtype} {y.shape}; expected (N,) ints",
                    hint="labels 0..K-1, e.g. y.astype(np.int64)",
                )
            if y.size and int(y.min()) < 0:
                raise DataError(
                    f"{where}: negative label {int(y.min())}", hint="labels must be 0..K-1"
                )
        elif y.dtype.kind not in "iuf" or not np.isfinite(y).all() or y.ndim not in (1, 2):
            raise DataError(f"{where}: regression targets must be finite (N,) or (N, k) numbers")
        if lengths is not None:
            lengths = np.asarray(lengths)
            bad = lengths.dtype.kind not in "iu" or lengths.shape != (len(x),)
            if bad or (lengths.size and (lengths.min() < 1 or lengths.max() > x.shape[1])):
                raise DataError(f"{where}: lengths must be (N,) integers in [1, {x.shape[1]}]")

    def rows_per_shard(self, x: Any) -> int:
        """Rows of a shard of examples like `x`'s: shard_rows, else shard_bytes of x."""
        if self.shard_rows is not None:
            return self.shard_rows
        row = np.dtype(x.dtype).itemsize * max(math.prod(x.shape[1:]), 1)
        return max(self.shard_bytes // row, 1)

    def _flush(self, s: _Split, rows: int) -> None:
        s.dir.mkdir(exist_ok=True)
        index = len(s.shards)
        for kind, parts in s.pending.items():
            whole = np.concatenate(parts) if len(parts) > 1 else parts[0]
            head, tail = whole[:rows], whole[rows:]
            tmp = s.dir / (shard_name(kind, index) + ".part")
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(head), allow_pickle=False)
            os.replace(tmp, s.dir / shard_name(kind, index))
            s.pending[kind] = [tail] if len(tail) else []
        s.shards.append(rows)
        s.rows += rows
        s.pending_rows -= rows

    def close(self) -> Path:
        """Write the last partial shards and meta.json; returns the folder."""
        missing = [s for s in ("train", "test") if s not in self.splits]
        if missing:
            raise DataError(
                f"{self.root}: no {' or '.join(missing)} examples were added",
                hint="add('train', x, y) and add('test', x, y)",
            )
        for s in self.splits.values():
            if s.pending_rows:
                self._flush(s, s.pending_rows)
            if not s.rows:
                raise DataError(f"{s.dir.name} split of {self.root} has no examples")
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name or self.root.name,
            "task": self.task,
            "num_classes": self._num_classes(),
            "input_shape": list(self.example or ()),
            "x_dtype": str(self.x_dtype),
            "tokens": self.tokens,
            "classes": list(self.classes) if self.classes else None,
            "normalize": self._normalize(),
            "splits": {
                name: {
                    "rows": s.rows,
                    "shards": s.shards,
                    "extra": list((s.kinds or ())[2:]),
                    "bounds": [_plain(s.lo), _plain(s.hi)],
                }
                for name, s in self.splits.items()
            },
        }
        tmp = self.root / "meta.json.part"
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, self.root / "meta.json")
        return self.root

    def _num_classes(self) -> int:
        if self.task == "regress":
            return 1 if not self.y_shape else int(self.y_shape[0])
        top = max(s.y_max for s in self.splits.values())
        count = self.num_classes or (len(self.classes) if self.classes else top + 1)
        for name, s in self.splits.items():
            if s.y_max >= count:
                raise DataError(
                    f"{name} split of {self.root} has the label {s.y_max}, outside [0, {count})",
                    hint=f"labels must be 0..{count - 1}, or num_classes={top + 1}",
                )
        return int(count)

    def _normalize(self) -> dict | None:
        if self.tokens:
            return None
        if self.normalize is None:
            return {"scale": self.scale}
        if self.normalize == "auto":
            mean, std = self.moments.result()
            mean, std = mean / self.scale, std / self.scale
            return {"scale": self.scale, "mean": mean, "std": std if std > 0 else 1.0}
        mean, std = self.normalize
        return {
            "scale": self.scale,
            "mean": _plain(np.asarray(mean)),
            "std": _plain(np.asarray(std)),
        }


def _steps_mask(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return np.arange(x.shape[1])[None, :] < np.asarray(lengths)[:, None]


def _plain(v: Any) -> Any:
    return None if v is None else np.asarray(v).tolist()


def write(path: str | os.PathLike, splits: Mapping[str, Mapping[str, Any]], **options: Any) -> Path:
    """`splits` = {"train": {"x": x, "y": y[, "lengths": l]}, "test": {...}[, "val": ...]} as a
    mapped folder at `path`; `options` are ShardWriter's. Arrays may be memmaps: they are
    read one shard at a time."""
    with ShardWriter(path, **options) as w:
        for split, arrays in splits.items():
            x = arrays["x"]
            per = w.rows_per_shard(x)
            for start in range(0, max(len(x), 1), per):
                part = slice(start, start + per)
                lengths = arrays.get("lengths")
                w.add(split, x[part], arrays["y"][part], None if lengths is None else lengths[part])
    return w.root


def _read_source(src: Path) -> dict[str, Any]:
    """The arrays of a data=arrays source: a .npy folder memory-mapped (bounded memory), or
    a .npz (each array read whole: an .npz cannot be mapped)."""
    if src.is_dir():
        arrays = {f.stem: np.load(f, mmap_mode="r", allow_pickle=False) for f in src.glob("*.npy")}
    elif src.is_file():
        try:
            with np.load(src, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"cannot read {src}: {err}") from err
    else:
        raise DataError(f"{src} does not exist", hint="pass a .npz or a folder of .npy files")
    need = [n for n in ("x_train", "y_train", "x_test", "y_test") if n not in arrays]
    if need:
        raise DataError(
            f"{src} has no {', '.join(need)}",
            hint="name the arrays as for data=arrays (x_train, y_train, ...)",
        )
    return arrays


def main(argv: Sequence[str]) -> int:
    """`python -m dlx.data.mapped pack SRC DIR [...]`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m dlx.data.mapped")
    sub = parser.add_subparsers(dest="command", required=True)
    pack = sub.add_parser("pack", help="a data=arrays .npz / .npy folder -> a mapped folder")
    pack.add_argument("src", type=Path)
    pack.add_argument("dst", type=Path)
    pack.add_argument("--scale", type=float, default=1.0, help="x is divided by it (255: bytes)")
    pack.add_argument("--normalize", default="auto", help="auto | none | MEAN,STD")
    pack.add_argument("--num-classes", type=int, default=None)
    pack.add_argument("--regress", action="store_true", help="y are regression targets")
    pack.add_argument("--tokens", action="store_true", help="x are integer token ids")
    pack.add_argument("--shard-rows", type=int, default=None)
    pack.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(list(argv))
    try:
        norm: Any = args.normalize
        if norm == "none":
            norm = None
        elif norm != "auto":
            try:
                norm = tuple(float(v) for v in norm.split(","))
                assert len(norm) == 2
            except (ValueError, AssertionError):
                raise DataError(
                    f"--normalize {args.normalize!r}: expected auto, none or "
                    "MEAN,STD (e.g. 0.1307,0.3081)"
                ) from None
        arrays = _read_source(args.src)
        splits = {
            s: {
                "x": arrays[f"x_{s}"],
                "y": arrays[f"y_{s}"],
                **({"lengths": arrays[f"lengths_{s}"]} if f"lengths_{s}" in arrays else {}),
            }
            for s in SPLITS
            if f"x_{s}" in arrays
        }
        classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else None
        out = write(
            args.dst,
            splits,
            num_classes=args.num_classes,
            scale=args.scale,
            normalize=norm,
            tokens=args.tokens,
            classes=classes,
            task="regress" if args.regress else "classify",
            shard_rows=args.shard_rows,
            overwrite=args.overwrite,
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        if err.hint:
            print(f"fix: {err.hint}", file=sys.stderr)
        return 2
    print(f"wrote {out}: train with data=mapped data.path={out}")
    return 0
