"""data=mapped: a dataset larger than memory, as `.npy` shards on disk, read row by row.

Layout (written by `write`, `ShardWriter` or `python -m dlx.data.mapped pack SRC DIR`)::

    DIR/meta.json                      task, num_classes, input_shape, normalisation, shards
    DIR/train/x-00000.npy y-00000.npy [lengths-00000.npy] x-00001.npy ...
    DIR/val/...                        optional: else data.val_size of train, by the seed
    DIR/test/...

Only x stays on disk: `Dataset.x_<split>` is a `MappedArray`, which numpy-style indexing
(an int, a slice, an index array) turns into a float32 batch, standardised on the fly with
the statistics in meta.json (uint8 images stay uint8 on disk, 4x smaller than float32).
Labels and lengths are small and loaded whole, so they are checked whole. Nothing here
reads a whole x split; `np.asarray(x)` still works (and is counted in `x.stats`).

Why `.npy` shards and not Grain + ArrayRecord: numpy only (no array_record/grain wheels), a
format numpy and every other tool already read (`np.load(f, mmap_mode="r")` opens a shard),
fixed-size rows, so row i is at a computed offset and random access needs no index.

Why positioned reads (`os.preadv` at that offset, POSIX_FADV_RANDOM: no readahead) and not
indexing an `np.memmap`: the same CPU per batch here (128 cold rows: 2.8 ms sys + 1.3 user
against 3.0 + 0.9 mapped), both release the GIL while the disk works, but a mapped file that
is truncated or replaced while training kills the process with SIGBUS where a read raises a
DataError naming the shard; and mapped pages count in the process's RSS (the page cache
does not: it is charged to the memory cgroup and reclaimed under its limit).

Multi-process runs: the loop hands `make_batch` this process's rows only (`Phase.reads_local`),
so each process reads just its share of every batch. Any row may be drawn by any process, so
every process needs the whole folder at the same path: a shared filesystem (NFS, Lustre,
GCS FUSE), or a copy on each host's local disk.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlx.data.config import (
    get_bool,
    get_choice,
    get_int,
    get_limit,
    get_path,
    resolve_val_size,
)
from dlx.data.dataset import SPLITS, Dataset
from dlx.data.mapped_write import FORMAT, VERSION, ShardWriter, main, shard_name, write
from dlx.data.splits import check_seed, split_indices
from dlx.errors import DataError

__all__ = ["MappedArray", "ShardWriter", "load_mapped", "write"]

WRITE_HINT = (
    "write the folder with dlx.data.mapped.write(dir, {'train': {'x': x, 'y': y}, "
    "'test': {...}}), or from a .npz / .npy folder: python -m dlx.data.mapped pack SRC DIR"
)


_OPEN_LOCK = threading.Lock()
MERGE_BYTES = 32 * 1024  # rows at most this far apart are read in one span (gather)
SPAN_BYTES = 1024 * 1024  # and no span is longer


@dataclass(frozen=True)
class Transform:
    """Stored x -> model input, the same float32 arithmetic as dlx/data/splits.py uses in
    memory (so both paths give bitwise equal batches): `(x / scale - mean) / std`, padding
    steps back to 0; token ids are only cast to int32."""

    scale: float = 1.0
    mean: Any = 0.0  # scalar, or one per entry of the last axis
    std: Any = 1.0
    tokens: bool = False

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.int32 if self.tokens else np.float32)

    def __call__(self, raw: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
        if self.tokens:
            return np.ascontiguousarray(raw, dtype=np.int32)
        # In place: the same float32 operations, in the same order, as splits.py's
        # `(x.astype(f32) / scale - mean) / std` (bitwise equal), without three temporaries.
        out = raw.astype(np.float32)
        out /= np.float32(self.scale)
        out -= np.float32(self.mean)
        out /= np.float32(self.std)
        if lengths is not None:
            out[~(np.arange(raw.shape[1])[None, :] < lengths[:, None])] = 0.0
        return out


@dataclass
class ReadStats:
    """What one array (or view) has read: how a test tells that nothing read a split whole."""

    calls: int = 0  # gathers
    rows: int = 0  # rows read from disk
    full_reads: int = 0  # np.asarray(...) of a whole view
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, rows: int) -> None:  # prefetch threads gather at once: += would race
        with self.lock:
            self.calls, self.rows = self.calls + 1, self.rows + rows


@dataclass
class Shard:
    """One `.npy` file of x: where its rows start and how big one is."""

    path: Path
    rows: int
    offset: int  # bytes before the data (the .npy header)
    row_bytes: int
    _fd: int | None = field(default=None, repr=False)
    _pid: int = field(default=0, repr=False)

    def fd(self) -> int:
        """The open file (opened on first use, once: prefetch threads read at once; preadv
        keeps no file position, so they share it)."""
        with _OPEN_LOCK:
            if self._fd is None or self._pid != os.getpid():  # a forked child opens its own
                fd = os.open(self.path, os.O_RDONLY)
                if hasattr(os, "posix_fadvise"):  # rows are read at random: no readahead
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                self._fd, self._pid = fd, os.getpid()
            return self._fd

    def read_into(self, view: memoryview, start: int) -> None:
        """len(view) bytes at file offset `start` (a filesystem may return fewer per call)."""
        fd, done = self.fd(), 0
        while done < len(view):
            got = os.preadv(fd, [view[done:]], start + done)
            if got <= 0:
                raise DataError(
                    f"{self.path} ended early: {done} of {len(view)} bytes at offset {start}",
                    hint="the shard was truncated or replaced; write the folder again",
                )
            done += got

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None


class MappedArray:
    """One split's x as a read-only array on disk: `len`, `shape`, `dtype`, `ndim`, and
    numpy indexing that returns a numpy array (an int: one example; a slice, an index array
    or a boolean mask: those rows, gathered shard by shard, each row read once).

    `take(rows)` is a lazy view (a held-out val split, data.limit_train). `min()`/`max()` are
    the stored split's bounds from meta.json, transformed (no read)."""

    def __init__(
        self,
        shards: list[Shard],
        row_shape: tuple[int, ...],
        raw_dtype: np.dtype,
        transform: Transform,
        *,
        lengths: np.ndarray | None = None,
        bounds: tuple[float, float] | None = None,
        rows: np.ndarray | None = None,
        stats: ReadStats | None = None,
        name: str = "x",
    ) -> None:
        self.shards, self.row_shape, self.raw_dtype = shards, tuple(row_shape), np.dtype(raw_dtype)
        self.transform, self.lengths, self.bounds, self.name = transform, lengths, bounds, name
        self.starts = np.cumsum([0] + [s.rows for s in shards])
        self.data_offsets = np.array([s.offset for s in shards], dtype=np.int64)
        self.rows = rows  # view -> stored row; None: all stored rows in order
        self.stats = stats if stats is not None else ReadStats()

    # -- array-like surface ----------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.starts[-1]) if self.rows is None else len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.row_shape)

    @property
    def dtype(self) -> np.dtype:
        return self.transform.dtype

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def stored_bytes(self) -> int:
        return int(self.starts[-1]) * self.raw_dtype.itemsize * int(np.prod(self.row_shape))

    def __repr__(self) -> str:
        return (
            f"MappedArray({self.name}, shape={self.shape}, dtype={self.dtype}, stored "
            f"{self.raw_dtype} in {len(self.shards)} shard(s))"
        )

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key) + (n if key < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"index {int(key)} is out of bounds for {self.name} of {n} rows")
            rows, first = np.array([i]), 0
        elif isinstance(key, slice):
            rows, first = np.arange(n)[key], slice(None)
        else:
            rows = np.asarray(key)
            if rows.dtype == bool:
                if rows.shape != (n,):
                    raise IndexError(f"boolean index of shape {rows.shape} for {n} rows")
                rows = np.flatnonzero(rows)
            elif rows.dtype.kind not in "iu":
                raise IndexError(f"{self.name} is indexed by integers, not {rows.dtype}")
            first = np.arange(rows.size).reshape(rows.shape)  # numpy's rules for the rest
            rows = rows.reshape(-1)
        out = self.gather(rows)
        # The rows are axis 0 of `out`; indexing it with `first` and the rest of the key
        # gives what the same key gives on the whole array.
        return out[(first, *rest)] if rest or not isinstance(first, slice) else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        self.stats.full_reads += 1  # the whole split in memory: what this class avoids
        out = self.gather(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype)

    def take(self, rows: np.ndarray) -> MappedArray:
        """A lazy view of `rows` of this one (nothing is read), with its own `stats`."""
        rows = np.asarray(rows, dtype=np.int64)
        stored = rows if self.rows is None else self.rows[rows]
        return MappedArray(
            self.shards,
            self.row_shape,
            self.raw_dtype,
            self.transform,
            lengths=self.lengths,
            bounds=self.bounds,
            rows=stored,
            name=self.name,
        )

    def _bound(self, which: int) -> Any:
        if self.bounds is None:
            raise ValueError(f"{self.name} has no stored min/max (meta.json)")
        raw = np.full((1, *self.row_shape), self.bounds[which], dtype=self.raw_dtype)
        return self.transform(raw, None).flat[0]  # monotone: the bound of the output

    def min(self) -> Any:
        return self._bound(0)

    def max(self) -> Any:
        return self._bound(1)

    # -- reading ---------------------------------------------------------------------------
    def gather(self, idx: np.ndarray) -> np.ndarray:
        """Rows `idx` of this view, transformed: each distinct stored row read once, in file
        order (sorted), shard by shard."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of bounds for {self.name} of {n} rows")
        idx = np.where(idx < 0, idx + n, idx)
        stored = idx if self.rows is None else self.rows[idx]
        unique, inverse = np.unique(stored, return_inverse=True)
        raw = np.empty((len(unique), *self.row_shape), self.raw_dtype)
        row_bytes = raw.itemsize * int(np.prod(self.row_shape))
        rows_bytes = raw.reshape(len(unique), row_bytes // raw.itemsize).view(np.uint8)
        buf = memoryview(rows_bytes.reshape(-1))
        # One read per run of rows at most MERGE_BYTES apart within a shard, offsets computed
        # at once: the Python per read is what this adds to each step's CPU (the kernel's
        # share of a cold 4 KB read is ~25 us here, the Python ~1 us). A run of consecutive
        # rows is read straight into place; one with gaps (rows a few KB apart, as the
        # quasi-random order draws them) into a scratch span, then its rows are picked out:
        # one read of a 32 KB span costs less than eight of its rows read one by one.
        gap = max(1, MERGE_BYTES // row_bytes)
        window = max(gap, SPAN_BYTES // row_bytes)  # spans never cross a window boundary
        shard = np.searchsorted(self.starts, unique, side="right") - 1
        first = np.flatnonzero(
            (np.diff(unique, prepend=-gap - 2) > gap)
            | (np.diff(shard, prepend=-1) != 0)
            | (np.diff(unique // window, prepend=-1) != 0)
        )
        last = np.append(first[1:], len(unique))[: len(first)] - 1
        s_of = shard[first]
        lo, hi = unique[first], unique[last]
        at = (self.data_offsets[s_of] + (lo - self.starts[s_of]) * row_bytes).tolist()
        spans = (hi - lo + 1).tolist()
        sids = s_of.tolist()
        fds = {i: self.shards[i].fd() for i in set(sids)}
        scratch = None
        for j, (s, start, span) in enumerate(zip(sids, at, spans, strict=True)):
            a, b = int(first[j]), int(last[j]) + 1
            if span == b - a:  # consecutive rows: read in place
                view, want = buf[a * row_bytes : b * row_bytes], (b - a) * row_bytes
            else:
                if scratch is None or len(scratch) < span * row_bytes:
                    scratch = np.empty(window * row_bytes, np.uint8)
                view, want = memoryview(scratch)[: span * row_bytes], span * row_bytes
            if os.preadv(fds[s], [view], start) != want:  # short: finish it
                self.shards[s].read_into(view, start)
            if span != b - a:
                picked = (unique[a:b] - unique[a]) * row_bytes
                rows_bytes[a:b] = scratch[picked[:, None] + np.arange(row_bytes)[None, :]]
        self.stats.count(len(unique))
        lengths = None if self.lengths is None else self.lengths[unique]
        out = self.transform(raw, lengths)
        return out[inverse] if len(unique) != len(idx) or not _is_sorted(stored) else out

    def close(self) -> None:
        for s in self.shards:
            s.close()


def _is_sorted(a: np.ndarray) -> bool:
    return bool(a.size < 2 or np.all(a[1:] > a[:-1]))


# -- opening a folder ----------------------------------------------------------------------
def read_meta(root: Path) -> dict:
    if not root.is_dir():
        raise DataError(f"data.path={root} is not a folder", hint=WRITE_HINT)
    file = root / "meta.json"
    if not file.is_file():
        raise DataError(
            f"{file} is missing: {root} is not a complete dlx.data.mapped folder "
            "(meta.json is written last, so a writer that stopped early leaves none)",
            hint=WRITE_HINT,
        )
    try:
        meta = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read {file}: {err}", hint=WRITE_HINT) from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{file} is not a {FORMAT} meta.json", hint=WRITE_HINT)
    if meta.get("version") != VERSION:
        raise DataError(
            f"{file} has format version {meta.get('version')!r}; this dlx reads {VERSION}",
            hint="write the folder again with this version of dlx",
        )
    return meta


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a `.npy` file, from its header only."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0}.get(
                version, np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read(f)
            offset = f.tell()
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}", hint=WRITE_HINT) from err
    if fortran or dtype.hasobject or dtype.kind not in "biuf":
        raise DataError(
            f"{path} holds a {'Fortran-ordered ' if fortran else ''}{dtype} array: "
            "expected C-ordered numbers",
            hint=WRITE_HINT,
        )
    if path.stat().st_size < offset + int(np.prod(shape)) * dtype.itemsize:
        raise DataError(
            f"{path} is shorter than its header says ({shape} {dtype}): truncated",
            hint="write the folder again (a copy that stopped early?)",
        )
    return tuple(shape), dtype, offset


def _load_small(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}", hint=WRITE_HINT) from err


def open_split(
    root: Path, split: str, meta: Mapping[str, Any], transform: Transform
) -> dict[str, Any]:
    """{"x": MappedArray, "y": array, ["lengths": array]} of one split, every shard's header
    checked against meta.json (rows, example shape, dtype); y and lengths read whole."""
    info = meta["splits"][split]
    row_shape, kinds = tuple(meta["input_shape"]), ("x", "y", *info.get("extra", []))
    shards, parts = [], {k: [] for k in kinds if k != "x"}
    x_dtype = None
    for i, rows in enumerate(info["shards"]):
        x_path = root / split / shard_name("x", i)
        if not x_path.is_file():
            raise DataError(
                f"{x_path} is missing (meta.json lists {len(info['shards'])} {split} shards)",
                hint=WRITE_HINT,
            )
        shape, dtype, offset = npy_header(x_path)
        x_dtype = x_dtype or dtype
        if shape[1:] != row_shape or dtype != x_dtype or shape[0] != rows:
            raise DataError(
                f"{x_path} holds {shape[0]} examples of shape {shape[1:]} {dtype}; meta.json "
                f"says {rows} of {row_shape} {x_dtype}",
                hint="every shard needs the same example shape and dtype; " + WRITE_HINT,
            )
        shards.append(Shard(x_path, rows, offset, dtype.itemsize * int(np.prod(row_shape))))
        for kind in parts:
            path = root / split / shard_name(kind, i)
            if not path.is_file():
                raise DataError(f"{path} is missing (beside {x_path.name})", hint=WRITE_HINT)
            a = _load_small(path)
            if len(a) != rows:
                raise DataError(
                    f"{path} has {len(a)} entries but {x_path} has {rows} examples",
                    hint=f"one {kind} entry per example, in the same order; " + WRITE_HINT,
                )
            if kind == "y":  # small, so checked whole, naming the shard and row
                a = _check_labels(a, path, int(meta["num_classes"]), task_of(meta))
            parts[kind].append(a)
    if x_dtype is None:
        raise DataError(f"{root / split} has no shards (meta.json lists none)", hint=WRITE_HINT)
    out = {k: np.concatenate(v) for k, v in parts.items()}
    bounds = info.get("bounds")
    out["x"] = MappedArray(
        shards,
        row_shape,
        x_dtype,
        transform,
        lengths=out.get("lengths"),
        bounds=tuple(bounds) if bounds else None,
        name=f"x_{split} ({root / split})",
    )
    return out


def task_of(meta: Mapping[str, Any]) -> str:
    """What y holds: regression targets or class labels."""
    return "regress" if meta.get("task") == "regress" else "classify"


def _check_labels(y: np.ndarray, where: Path, num_classes: int, task: str) -> np.ndarray:
    if task == "regress":
        if y.dtype.kind not in "fiu" or not np.isfinite(y).all():
            raise DataError(
                f"{where} has non-numeric or non-finite targets",
                hint="replace or drop NaN/inf targets, then write again",
            )
        return y
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise DataError(
            f"{where} has {y.dtype} labels of shape {y.shape}: expected (N,) integers",
            hint="save one integer label 0..K-1 per example",
        )
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where} has the label {y[i]} at row {i}, outside [0, {num_classes}) "
            f"(num_classes {num_classes} in meta.json)",
            hint=f"labels must be 0..{num_classes - 1}: fix them, or write the folder with "
            f"num_classes={int(y.max()) + 1}",
        )
    return y


def load_mapped(cfg: Mapping[str, Any], seed: int) -> Dataset:
    """The `data=mapped` loader: a folder written by `write` (see the module doc)."""
    seed = check_seed(seed)
    root = get_path(cfg, "path", "a folder written by dlx.data.mapped.write", hint=WRITE_HINT)
    meta = read_meta(root)
    task = task_of(meta)
    norm = meta.get("normalize") or {}
    use_stats = get_bool(cfg, "normalize", True) and bool(norm)
    transform = Transform(
        scale=float(norm.get("scale", 1.0)),
        mean=np.asarray(norm.get("mean", 0.0), np.float32) if use_stats else 0.0,
        std=np.asarray(norm.get("std", 1.0), np.float32) if use_stats else 1.0,
        tokens=bool(meta.get("tokens", False)),
    )
    if not use_stats:  # data.normalize=false: only scaled, as the in-memory loaders do
        transform = Transform(scale=transform.scale, tokens=transform.tokens)
    num_classes = int(meta["num_classes"])
    missing = [s for s in ("train", "test") if s not in meta.get("splits", {})]
    if missing:
        raise DataError(
            f"{root / 'meta.json'} lists no {' or '.join(missing)} split", hint=WRITE_HINT
        )
    order = get_choice(cfg, "order", "random", ("random", "quasi_random"))
    block = get_int(cfg, "order_block", 64, minimum=1)
    window = get_int(cfg, "order_window", 16, minimum=1)
    splits = {s: open_split(root, s, meta, transform) for s in SPLITS if s in meta["splits"]}
    if "val" not in splits:  # held out of train by the seed, as the in-memory loaders do
        train = splits["train"]
        count = resolve_val_size(cfg, len(train["y"]), 0.1)
        rest, held = split_indices(len(train["y"]), count, seed)
        if order == "quasi_random":  # in file order, so blocks of train rows stay contiguous
            rest = np.sort(rest)
        splits["val"] = _take(train, held)
        splits["train"] = _take(train, rest)
    limit_train, limit_eval = get_limit(cfg, "limit_train"), get_limit(cfg, "limit_eval")
    for s, limit in (("train", limit_train), ("val", limit_eval), ("test", limit_eval)):
        if limit is not None and limit < len(splits[s]["y"]):
            splits[s] = _take(splits[s], np.arange(limit))
    y_train = splits["train"]["y"]
    if task == "regress":
        y64 = y_train.astype(np.float64)
        y_mean, y_std = (y64.mean(axis=0), y64.std(axis=0)) if len(y64) else (0.0, 1.0)
        y_std = np.where(y_std > 0, y_std, 1.0)

    def to_y(y: np.ndarray) -> np.ndarray:
        if task != "regress":
            return np.ascontiguousarray(y, dtype=np.int32)
        if not get_bool(cfg, "normalize_target", True):
            return np.ascontiguousarray(y, dtype=np.float32)
        return np.ascontiguousarray((y.astype(np.float64) - y_mean) / y_std, dtype=np.float32)

    extra = {}
    if "lengths" in splits["train"]:
        extra["lengths"] = {s: np.ascontiguousarray(splits[s]["lengths"], np.int32) for s in SPLITS}
    stored = splits["train"]["x"].stored_bytes
    return Dataset(
        name=str(meta.get("name") or "mapped"),
        **{
            f"{k}_{s}": splits[s][k] if k == "x" else to_y(splits[s]["y"])
            for s in SPLITS
            for k in ("x", "y")
        },
        num_classes=num_classes,
        input_shape=tuple(int(d) for d in meta["input_shape"]),
        source=f"{root} ({stored / 2**30:.2f} GiB of train x on disk, read by batch)",
        task=task,
        extra=extra,
        classes=tuple(meta["classes"]) if meta.get("classes") else None,
        prefetch=get_int(cfg, "prefetch", 4) or 0,
        read_threads=max(1, get_int(cfg, "read_threads", 1) or 1),
        order_block=block if order == "quasi_random" else 0,
        order_window=window,
    )


def _take(arrays: Mapping[str, Any], rows: np.ndarray) -> dict[str, Any]:
    return {k: v.take(rows) if isinstance(v, MappedArray) else v[rows] for k, v in arrays.items()}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
