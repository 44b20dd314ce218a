"""data=mapped (dlx/data/mapped.py): .npy shards on disk read batch by batch, checked like the
in-memory loaders and giving the same batches, metrics and params as they do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlx.data import load_dataset
from dlx.data.mapped import MappedArray, write
from dlx.data.splits import build_dataset
from dlx.errors import DataError

MNIST_STATS = (0.1307, 0.3081)


def images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-shaped uint8 images whose class k has a bright bar in row band k (learnable)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 60, (n, 28, 28, 1)).astype(np.uint8)
    for i, k in enumerate(y):
        x[i, 2 + 2 * k : 4 + 2 * k, 4:24] = 230
    return x, y


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    (x, y), (xt, yt) = images(300, 0), images(90, 1)
    return {"x": x, "y": y, "xt": xt, "yt": yt}


def packed(path: Path, a: dict, **options) -> Path:
    splits = {"train": {"x": a["x"], "y": a["y"]}, "test": {"x": a["xt"], "y": a["yt"]}}
    options = {"scale": 255.0, "normalize": MNIST_STATS, "shard_rows": 64, **options}
    return write(path, splits, **options)


def in_memory(a: dict, cfg: dict, seed: int = 0):
    return build_dataset(
        "m",
        cfg,
        seed,
        train=(a["x"], a["y"]),
        test=(a["xt"], a["yt"]),
        val_default=0.1,
        num_classes=10,
        scale=255.0,
        fixed_stats=MNIST_STATS,
        source="memory",
    )


def test_reads_back_equal_through_every_kind_of_index(tmp_path: Path, arrays: dict) -> None:
    root = packed(tmp_path / "d", arrays)
    assert sorted(p.name for p in (root / "train").iterdir())[:2] == ["x-00000.npy", "x-00001.npy"]
    assert json.loads((root / "meta.json").read_text())["splits"]["train"]["shards"] == [
        64,
        64,
        64,
        64,
        44,
    ]
    cfg = {"name": "mapped", "path": str(root), "val_size": 40}
    ds, mem = load_dataset(cfg, 0), in_memory(arrays, {"val_size": 40})
    assert isinstance(ds.x_train, MappedArray) and ds.x_train.stored_bytes == 300 * 784
    assert ds.prefetch == 4 and mem.prefetch == 0
    rng = np.random.default_rng(5)
    for split in ("train", "val", "test"):
        x, want = getattr(ds, f"x_{split}"), getattr(mem, f"x_{split}")
        assert x.shape == want.shape and x.dtype == np.float32 and len(x) == len(want)
        idx = rng.integers(0, len(want), 50)  # random, repeated, across shard boundaries
        for key in (idx, 3, -1, slice(60, 70), slice(None, None, 7), idx.tolist(), (idx, 5)):
            got = x[key]
            assert got.dtype == np.float32 and np.array_equal(got, want[key]), (split, key)
        assert x[np.array([], dtype=int)].shape == (0, *want.shape[1:])
        mask = np.arange(len(want)) % 3 == 0
        assert np.array_equal(x[mask], want[mask])
        np.testing.assert_array_equal(getattr(ds, f"y_{split}"), getattr(mem, f"y_{split}"))
        assert getattr(ds, f"y_{split}").dtype == np.int32
    assert ds.x_train.stats.full_reads == 0
    assert np.array_equal(np.asarray(ds.x_train), mem.x_train) and ds.x_train.stats.full_reads
    assert ds.x_train.min() == mem.x_train.min() and ds.x_train.max() == mem.x_train.max()
    with pytest.raises(IndexError):
        ds.x_test[len(mem.x_test)]
    limited = load_dataset({**cfg, "limit_train": 70, "limit_eval": 9}, 0)
    assert np.array_equal(limited.x_train[:], mem.x_train[:70]) and len(limited.x_val) == 9


def test_auto_statistics_and_padded_sequences(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 200, (40, 6, 3)).astype(np.uint8)
    lengths = rng.integers(1, 7, 40)
    xt, lt = x[:10], lengths[:10]
    splits = {
        "train": {"x": x, "y": np.arange(40) % 4, "lengths": lengths},
        "test": {"x": xt, "y": np.arange(10) % 4, "lengths": lt},
    }
    root = write(tmp_path / "s", splits, shard_rows=16, scale=2.0)
    real = x[np.arange(6)[None, :] < lengths[:, None]].astype(np.float64) / 2.0
    norm = json.loads((root / "meta.json").read_text())["normalize"]
    assert norm["mean"] == pytest.approx(real.mean(), rel=1e-12)
    assert norm["std"] == pytest.approx(real.std(), rel=1e-12)
    ds = load_dataset({"name": "mapped", "path": str(root), "val_size": 0}, 0)
    train = {"x": x, "y": splits["train"]["y"], "lengths": lengths}
    mem = build_dataset(
        "m",
        {"val_size": 0},
        0,
        train=train,
        test=splits["test"],
        val_default=0.1,
        num_classes=4,
        scale=2.0,
        source="memory",
        fixed_stats=(norm["mean"], norm["std"]),
    )
    got = ds.x_train[np.arange(40)]
    assert np.array_equal(got, mem.x_train) and np.array_equal(ds.x_test[:], mem.x_test)
    assert (got[~(np.arange(6)[None, :] < mem.extra["lengths"]["train"][:, None])] == 0).all()
    assert np.array_equal(ds.extra["lengths"]["train"], mem.extra["lengths"]["train"])


def write_idx(folder: Path, a: dict) -> Path:
    """The same images as MNIST IDX files (data=mnist data.path=...)."""
    folder.mkdir()

    def idx(array: np.ndarray) -> bytes:
        header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
        return header + array.astype(np.uint8).tobytes()

    for name, arr in (
        ("train-images-idx3-ubyte", a["x"][..., 0]),
        ("train-labels-idx1-ubyte", a["y"]),
        ("t10k-images-idx3-ubyte", a["xt"][..., 0]),
        ("t10k-labels-idx1-ubyte", a["yt"]),
    ):
        (folder / name).write_bytes(idx(arr))
    return folder


STEPS, BATCH, VAL = 6, 32, 50
TRAIN = (
    "recipe=cnn",
    f"trainer.max_steps={STEPS}",
    f"data.batch_size={BATCH}",
    f"data.val_size={VAL}",
    "trainer.progress=plain",
    "trainer.log_every=2",
)


def _run(cli, out: Path, *args: str) -> Path:
    result = cli("train", *TRAIN, *args, f"outputs.dir={out}")
    assert result.exit_code == 0, result.output
    (run,) = (out / "cnn").iterdir()
    return run


def _records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(r).items() if "per_sec" not in k} for r in lines]


def test_training_from_disk_equals_in_memory(
    cli, tmp_path: Path, arrays: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jax

    import dlx.data.mapped as mapped
    from dlx.restore import load_run

    memory = _run(
        cli,
        tmp_path / "a",
        "data=mnist",
        f"data.path={write_idx(tmp_path / 'i', arrays)}",
        "data.verify=false",
        "data.download=false",
    )
    loaded = []
    original = mapped.load_mapped
    monkeypatch.setattr(
        mapped, "load_mapped", lambda c, s: loaded.append(original(c, s)) or loaded[-1]
    )
    disk = _run(cli, tmp_path / "b", "data=mapped", f"data.path={packed(tmp_path / 'd', arrays)}")
    assert _records(disk) == _records(memory)  # every train, val and test metric, bitwise
    assert any("val/loss" in r for r in _records(disk)) and "test/loss" in _records(disk)[-1]
    (ds,) = loaded
    # Nothing read a split whole; train read exactly its batches' rows (+1: the example
    # row runtime sizing looks at), val its rows once.
    assert ds.x_train.stats.full_reads == ds.x_val.stats.full_reads == 0
    assert ds.x_train.stats.rows == STEPS * BATCH + 1 and ds.x_val.stats.rows == VAL
    monkeypatch.setattr(mapped, "load_mapped", original)
    a, b = (load_run(r, kind="latest").state.params for r in (memory, disk))
    same = jax.tree_util.tree_map(lambda p, q: np.array_equal(np.asarray(p), np.asarray(q)), a, b)
    assert all(jax.tree_util.tree_leaves(same))


def _damage(root: Path, what: str) -> Path:
    """Break one file of a good folder; returns the file the error must name."""
    train = root / "train"
    if what == "no meta":
        (root / "meta.json").unlink()
        return root / "meta.json"
    if what == "missing shard":
        (train / "x-00002.npy").unlink()
        return train / "x-00002.npy"
    if what == "row shape":
        np.save(train / "x-00001.npy", np.zeros((64, 27, 28, 1), np.uint8))
        return train / "x-00001.npy"
    if what == "y length":
        np.save(train / "y-00003.npy", np.zeros(63, np.int64))
        return train / "y-00003.npy"
    if what == "label range":
        y = np.load(train / "y-00004.npy")
        y[7] = 12
        np.save(train / "y-00004.npy", y)
        return train
    if what == "truncated":
        path = train / "x-00000.npy"
        path.write_bytes(path.read_bytes()[:-100])
        return path
    raise AssertionError(what)


@pytest.mark.parametrize(
    "what", ["no meta", "missing shard", "row shape", "y length", "label range", "truncated"]
)
def test_bad_folders_are_one_error_naming_the_file(tmp_path: Path, arrays: dict, what: str) -> None:
    root = packed(tmp_path / "d", arrays)
    named = _damage(root, what)
    with pytest.raises(DataError) as err:
        load_dataset({"name": "mapped", "path": str(root)}, 0)
    assert str(named) in str(err.value) and err.value.hint
    if what == "label range":
        assert "12" in str(err.value) and "row 7" in str(err.value)


def test_cli_exit_2_for_a_folder_that_is_not_one(cli, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = cli(
        "train",
        "recipe=cnn",
        "data=mapped",
        f"data.path={tmp_path / 'empty'}",
        f"outputs.dir={tmp_path / 'o'}",
    )
    assert result.exit_code == 2 and "meta.json" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_writer_refuses_inconsistent_chunks(tmp_path: Path) -> None:
    from dlx.data.mapped_write import ShardWriter

    x = np.zeros((8, 4), np.float32)
    with pytest.raises(DataError, match="shape"), ShardWriter(tmp_path / "a") as w:
        w.add("train", x, np.zeros(8, int))
        w.add("train", np.zeros((8, 5), np.float32), np.zeros(8, int))
    assert not (tmp_path / "a" / "meta.json").exists()  # an unfinished folder has no meta
    with pytest.raises(DataError, match="7 labels for 8"):
        ShardWriter(tmp_path / "b").add("train", x, np.zeros(7, int))
    with pytest.raises(DataError, match="NaN"):
        ShardWriter(tmp_path / "c").add("train", x + np.nan, np.zeros(8, int))
    with pytest.raises(DataError, match="label 12, outside"):
        write(
            tmp_path / "d",
            {"train": {"x": x, "y": np.full(8, 12)}, "test": {"x": x, "y": np.zeros(8, int)}},
            num_classes=10,
        )
    with pytest.raises(DataError, match="not empty"):
        write(tmp_path / "d", {"train": {"x": x, "y": np.zeros(8, int)}})


def test_pack_command_from_npy_folder(tmp_path: Path, arrays: dict) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name, key in (("x_train", "x"), ("y_train", "y"), ("x_test", "xt"), ("y_test", "yt")):
        np.save(src / f"{name}.npy", arrays[key])
    cmd = [
        sys.executable,
        "-m",
        "dlx.data.mapped",
        "pack",
        str(src),
        str(tmp_path / "out"),
        "--scale",
        "255",
        "--normalize",
        "0.1307,0.3081",
        "--shard-rows",
        "100",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ds = load_dataset({"name": "mapped", "path": str(tmp_path / "out"), "val_size": 40}, 0)
    assert np.array_equal(ds.x_val[:], in_memory(arrays, {"val_size": 40}).x_val)
    bad = subprocess.run(
        [*cmd[:4], str(tmp_path / "nope"), str(tmp_path / "o2")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_prefetch_keeps_order_and_raises_where_the_batch_was_due() -> None:
    import threading
    import time

    from dlx.data.prefetch import prefetched

    seen_threads = set()

    def make(r: np.ndarray) -> int:
        seen_threads.add(threading.get_ident())
        time.sleep(0.02 * (int(r[0]) % 3 == 0))  # some batches slower: workers finish out of order
        if int(r[0]) == 7:
            raise ValueError("bad batch 7")
        return int(r[0])

    rows = [np.array([i]) for i in range(12)]
    out = prefetched(make, rows[:7], depth=4, threads=4)
    assert list(out) == list(range(7)) and len(seen_threads) > 1  # several workers, in order
    seen_threads.clear()
    assert list(prefetched(make, rows[:7], depth=4)) == list(range(7))
    assert len(seen_threads) == 1  # the default: one worker, however deep the queue
    got = []
    with pytest.raises(ValueError, match="bad batch 7"):
        for b in prefetched(make, rows, depth=4, threads=2):
            got.append(b)
    assert got == list(range(7))
    assert list(prefetched(make, rows[:5], depth=0)) == list(range(5))
    early = prefetched(make, rows, depth=3)
    assert next(early) == 0
    early.close()  # the loop leaving an epoch early: no thread is left running
    assert not [t for t in threading.enumerate() if t.name.startswith("dlx-prefetch")]


HOOK = """
import atexit, os
import dlx.data.mapped as m
_load = m.load_mapped
def load_mapped(cfg, seed):
    ds = _load(cfg, seed)
    out = os.path.join(os.environ["ROWS_DIR"], f"{os.getpid()}.txt")
    atexit.register(lambda: open(out, "w").write(f"{ds.x_train.stats.rows}"))
    return ds
m.load_mapped = load_mapped
"""


@pytest.mark.slow
def test_each_process_reads_only_its_rows(tmp_path: Path, arrays: dict) -> None:
    """2 processes (dlx launch): each reads half of every batch's rows from disk."""
    import os

    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(HOOK)  # counts rows in each process
    (tmp_path / "rows").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(PYTHONPATH=str(tmp_path / "hook"), ROWS_DIR=str(tmp_path / "rows"))
    steps, batch = 8, 64
    cmd = [
        sys.executable,
        "-m",
        "dlx",
        "launch",
        "--nproc",
        "2",
        "--",
        "train",
        "recipe=cnn",
        "data=mapped",
        f"data.path={packed(tmp_path / 'd', arrays)}",
        "parallel=sharded",
        "parallel.cpu_devices=2",
        f"trainer.max_steps={steps}",
        f"data.batch_size={batch}",
        f"outputs.dir={tmp_path / 'out'}",
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stderr[-3000:]
    counts = [int(f.read_text()) for f in (tmp_path / "rows").iterdir()]
    assert counts == [steps * batch // 2 + 1] * 2  # + the one row runtime sizing reads


def test_a_user_loader_may_return_a_dataset_on_disk(
    cli, tmp_path: Path, arrays: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """data._target_ returning load_mapped(...)'s Dataset trains (x stays a MappedArray); the
    NaN check reads the stored bounds (no full scan), so float shards whose meta.json says NaN
    are refused before anything is written."""
    floats = {**arrays, "x": arrays["x"].astype(np.float32), "xt": arrays["xt"].astype(np.float32)}
    root = packed(tmp_path / "d", floats)
    (tmp_path / "disk_loader.py").write_text(
        "from dlx.data.mapped import load_mapped\n"
        "def load(where, seed):\n"
        "    return load_mapped({'path': where, 'val_size': 30}, seed)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    run = _run(cli, tmp_path / "o", "+data._target_=disk_loader.load", f"+data.where={root}")
    assert "test/accuracy" in _records(run)[-1]
    meta = json.loads((root / "meta.json").read_text())
    meta["splits"]["train"]["bounds"] = [0, float("nan")]
    (root / "meta.json").write_text(json.dumps(meta))
    result = cli("train", *TRAIN, "+data._target_=disk_loader.load", f"+data.where={root}",
                 f"outputs.dir={tmp_path / 'p'}")  # fmt: skip
    assert result.exit_code == 2 and "x_train has NaN or inf" in result.output, result.output
    assert not (tmp_path / "p").exists()


def test_quasi_random_order_covers_every_row_from_few_blocks(tmp_path: Path, arrays) -> None:
    from dlx.data.batching import epoch_batches

    batches = list(epoch_batches(5000, 128, seed=3, epoch=2, block=64, window=4))
    again = list(epoch_batches(5000, 128, seed=3, epoch=2, block=64, window=4))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    rows = np.concatenate(batches)
    assert len(rows) == len(set(rows.tolist())) == 39 * 128  # each row at most once
    assert max(len(set((b // 64).tolist())) for b in batches) <= 8  # from 4-block windows
    plain = list(epoch_batches(5000, 128, seed=3, epoch=2))
    assert min(len(set((b // 64).tolist())) for b in plain) > 40  # a permutation: everywhere
    other = list(epoch_batches(5000, 128, seed=3, epoch=3, block=64, window=4))
    assert not np.array_equal(batches[0], other[0])  # a new order each epoch
    # The loader keeps train rows in file order under quasi_random, so blocks are contiguous
    root = packed(tmp_path / "d", arrays)
    ds = load_dataset({"name": "mapped", "path": str(root), "order": "quasi_random"}, 0)
    assert ds.order_block == 64 and np.all(np.diff(ds.x_train.rows) > 0)
    assert load_dataset({"name": "mapped", "path": str(root)}, 0).order_block == 0
    with pytest.raises(DataError, match=r"data\.order must be one of random, quasi_random"):
        load_dataset({"name": "mapped", "path": str(root), "order": "blocks"}, 0)
