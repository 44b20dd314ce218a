"""User data formats end to end: data=arrays (.npz / .npy folder), data=csv, data=image_folder,
data=fashion_mnist (source selection with fake packages, no download), and MNIST-layout IDX
files of another dataset at data=mnist's data.path. Every file is made here, in tmp_path.

Bad input exits 2 through the CLI with one message naming the file or key and a `fix:`,
no traceback, and nothing under outputs.dir.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dlx.data import load_dataset, sources
from dlx.errors import DataError

STEPS = ("trainer.progress=none", "trainer.log_every=10", "trainer.checkpoint=false")


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    # Error messages name long tmp paths: keep rich from wrapping them across lines.
    monkeypatch.setenv("COLUMNS", "1000")


def train(cli, out: Path, *args: str) -> dict:
    """`dlx train ...` with outputs in ``out``; the finished run's summary."""
    result = cli("train", *STEPS, f"outputs.dir={out}", *args)
    assert result.exit_code == 0, result.output
    (recipe,) = out.iterdir()
    (run,) = recipe.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished", summary
    return summary


# ---------------------------------------------------------------- data=arrays


def separable_sequences(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x (n, 6, 2) zero-padded, y, lengths): the sign of the first feature is the class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    lengths = rng.integers(2, 7, n)
    x = rng.normal(0, 0.3, (n, 6, 2)) + (2.0 * y - 1.0)[:, None, None] * np.array([1.5, 0.0])
    x[np.arange(6)[None, :] >= lengths[:, None]] = 0.0
    return x.astype(np.float32), y, lengths


def test_arrays_npz_padded_sequences_train_end_to_end(cli, tmp_path: Path) -> None:
    x, y, lengths = separable_sequences(200, 0)
    xt, yt, lt = separable_sequences(40, 1)
    path = tmp_path / "seq.npz"
    np.savez(
        path, x_train=x, y_train=y, x_test=xt, y_test=yt, lengths_train=lengths, lengths_test=lt
    )
    ds = load_dataset({"name": "arrays", "path": str(path), "val_size": 0.25}, 0)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (150, 50, 40)
    assert ds.input_shape == (6, 2) and ds.num_classes == 2 and ds.task == "classify"
    assert "max label + 1" in ds.source
    assert set(ds.extra) == {"lengths"}
    assert {k: v.shape for k, v in ds.extra["lengths"].items()} == {
        "train": (150,),
        "val": (50,),
        "test": (40,),
    }
    np.testing.assert_array_equal(ds.extra["lengths"]["test"], lt)  # test keeps file order
    pad = np.arange(6)[None, :] >= ds.extra["lengths"]["train"][:, None]
    assert np.all(ds.x_train[pad] == 0.0)  # padding stays zero after normalisation
    real = ds.x_train[~pad]
    assert abs(real.mean()) < 1e-5 and abs(real.std() - 1.0) < 1e-4  # stats of real steps only
    summary = train(
        cli,
        tmp_path / "out",
        "recipe=cnn",
        "data=arrays",
        f"data.path={path}",
        "model=mlp",
        "model.features=[16]",
        "data.batch_size=16",
        "trainer.max_steps=60",
        "optim.lr=0.01",
    )
    assert summary["test"]["test/count"] == 40
    assert summary["test"]["test/accuracy"] >= 0.9, summary["test"]


def test_arrays_npy_folder_float_targets_are_regression(cli, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 2))
    folder = tmp_path / "arrays"
    folder.mkdir()
    for split, n in (("train", 300), ("val", 40), ("test", 60)):
        x = rng.normal(size=(n, 5))
        np.save(folder / f"x_{split}.npy", x.astype(np.float32))
        np.save(folder / f"y_{split}.npy", 10.0 + 5.0 * (x @ w))  # float64 (N, 2)
    ds = load_dataset({"name": "arrays", "path": str(folder)}, 0)
    assert ds.task == "regress" and ds.num_classes == 2 and ds.y_train.dtype == np.float32
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (300, 40, 60)  # val as given
    assert abs(float(ds.y_train.mean())) < 1e-5  # standardised with train statistics
    raw = load_dataset({"name": "arrays", "path": str(folder), "normalize_target": False}, 0)
    np.testing.assert_allclose(raw.y_test, np.load(folder / "y_test.npy"), rtol=1e-5)
    summary = train(
        cli,
        tmp_path / "out",
        "recipe=cnn",
        "data=arrays",
        f"data.path={folder}",
        "model=mlp",
        "model.features=[32]",
        "model.dropout=0.0",
        "data.batch_size=30",
        "trainer.max_steps=150",
        "optim.lr=0.01",
    )
    assert summary["task"] == "regress"
    assert summary["test"]["test/r2"] > 0.9, summary["test"]


def test_arrays_task_classify_and_num_classes_options(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))
    names = np.array(["ant", "bee", "cat", "dog"])
    path = tmp_path / "a.npz"
    np.savez(path, x_train=x, y_train=np.arange(30) % 3, x_test=x[:6], y_test=np.zeros(6, int))
    assert load_dataset({"name": "arrays", "path": str(path)}, 0).num_classes == 3
    ds = load_dataset({"name": "arrays", "path": str(path), "num_classes": 7}, 0)
    assert ds.num_classes == 7 and "data.num_classes=7" in ds.source
    np.savez(path, x_train=x, y_train=np.arange(30) % 3, x_test=x[:6], y_test=np.zeros(6, int),
             classes=names)  # fmt: skip
    ds = load_dataset({"name": "arrays", "path": str(path)}, 0)
    assert ds.num_classes == 4 and ds.classes == ("ant", "bee", "cat", "dog")
    # Integer targets become float regression targets when the run asks for regression.
    ds = load_dataset({"name": "arrays", "path": str(path), "task": "regress"}, 0)
    assert ds.task == "regress" and ds.y_train.dtype == np.float32 and ds.num_classes == 1
    # Per-feature standardisation with train statistics.
    scaled = np.column_stack([x[:, 0] * 100, x[:, 1], x[:, 2] + 50])
    np.savez(path, x_train=scaled, y_train=np.arange(30) % 3, x_test=scaled[:6],
             y_test=np.zeros(6, int))  # fmt: skip
    ds = load_dataset({"name": "arrays", "path": str(path), "per_feature": True}, 0)
    np.testing.assert_allclose(ds.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(0), 1, atol=1e-4)


# ---------------------------------------------------------------- data=csv


def write_csv(path: Path, header: list[str] | None, rows: list[list]) -> Path:
    lines = ([",".join(header)] if header else []) + [",".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def tumour_rows(n: int, seed: int) -> list[list]:
    """id (text), two informative features, a noise feature, and a text label."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        bad = rng.random() < 0.5
        size = rng.normal(3.0 if bad else 1.0, 0.4)
        rows.append([f"p{i}", f"{size:.3f}", f"{rng.normal(size * 10, 1):.3f}",
                     f"{rng.normal():.3f}", "malignant" if bad else "benign"])  # fmt: skip
    return rows


def test_csv_text_labels_train_end_to_end(cli, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "tumours.csv", ["id", "size", "area", "noise", "diagnosis"], tumour_rows(250, 0)
    )
    cfg = {"name": "csv", "path": str(path), "drop": ["id"]}
    ds = load_dataset(cfg, 0)
    assert ds.classes == ("benign", "malignant") and ds.num_classes == 2
    assert ds.input_shape == (3,) and (len(ds.y_train) + len(ds.y_val), len(ds.y_test)) == (200, 50)
    np.testing.assert_allclose(ds.x_train.mean(0), 0, atol=1e-5)
    assert "benign, malignant" in ds.source and "3 features" in ds.source
    # The test split is fixed (data.test_size by a fixed seed); the run's seed moves val only.
    other = load_dataset(cfg, 5)
    np.testing.assert_array_equal(ds.y_test, other.y_test)
    assert not np.array_equal(ds.y_val, other.y_val)
    summary = train(
        cli,
        tmp_path / "out",
        "recipe=cnn",
        "data=csv",
        f"data.path={path}",
        "data.drop=[id]",
        "data.target=diagnosis",
        "model=mlp",
        "model.features=[16]",
        "data.batch_size=20",
        "trainer.max_steps=60",
        "optim.lr=0.01",
    )
    assert summary["test"]["test/count"] == 50
    assert summary["test"]["test/accuracy"] >= 0.9, summary["test"]


def test_csv_regression_from_train_and_test_files(cli, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    def rows(n: int) -> list[list]:
        x = rng.normal(size=(n, 3))
        y = 200 + 30 * x[:, 0] - 20 * x[:, 1] + rng.normal(0, 2, n)
        return [
            [f"{a:.4f}", f"{b:.4f}", f"{c:.4f}", f"{t:.3f}"]
            for (a, b, c), t in zip(x, y, strict=True)
        ]

    header = ["a", "b", "c", "price"]
    train_csv = write_csv(tmp_path / "train.csv", header, rows(300))
    test_csv = write_csv(tmp_path / "test.csv", header, rows(80))
    ds = load_dataset(
        {"name": "csv", "train": str(train_csv), "test": str(test_csv), "task": "regress"}, 0
    )
    assert ds.task == "regress" and ds.num_classes == 1 and len(ds.y_test) == 80
    assert "'price'" in ds.source and "standardised" in ds.source
    summary = train(
        cli,
        tmp_path / "out",
        "recipe=cnn",
        "data=csv",
        f"data.train={train_csv}",
        f"data.test={test_csv}",
        "data.target=price",
        "task=regression",
        "model=mlp",
        "model.features=[32]",
        "model.dropout=0.0",
        "data.batch_size=30",
        "trainer.max_steps=150",
        "optim.lr=0.01",
    )
    assert summary["task"] == "regress"
    assert summary["test"]["test/r2"] > 0.9, summary["test"]


def test_csv_headerless_skip_rows_and_integer_labels(tmp_path: Path) -> None:
    # scikit-learn's layout: a counts/class-names line, then rows without a header.
    rows = [[i * 0.1, (i % 4) * 2.0, [3, 7][i % 2]] for i in range(40)]
    path = tmp_path / "sk.csv"
    path.write_text("40,2,three,seven\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    with pytest.raises(DataError) as info:
        load_dataset({"name": "csv", "path": str(path)}, 0)
    assert "line 2 has 3 fields" in str(info.value) and "data.skip_rows" in info.value.hint
    ds = load_dataset({"name": "csv", "path": str(path), "skip_rows": 1}, 0)
    assert ds.classes == ("3", "7") and ds.num_classes == 2 and ds.input_shape == (2,)
    assert "'col2'" in ds.source
    # Space-separated, gzipped (like scikit-learn's diabetes files), a numeric target.
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress("\n".join(" ".join(map(str, r)) for r in rows).encode()))
    ds = load_dataset({"name": "csv", "path": str(gz), "target": 0, "task": "regress"}, 0)
    assert ds.task == "regress" and ds.input_shape == (2,)


# ---------------------------------------------------------------- data=image_folder


def write_images(root: Path, counts: dict[str, int], seed: int, size=(10, 12)) -> None:
    """Class "dark" / "light" images (PNG and JPEG), RGB, with noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, n in counts.items():
        folder = root / name
        folder.mkdir(parents=True)
        base = 40 if name == "dark" else 210
        for i in range(n):
            pixels = np.clip(rng.normal(base, 20, (*size, 3)), 0, 255).astype(np.uint8)
            suffix = ".png" if i % 2 else ".jpg"
            Image.fromarray(pixels).save(folder / f"{i}{suffix}")


def test_image_folder_train_test_layout_end_to_end(cli, tmp_path: Path) -> None:
    root = tmp_path / "images"
    write_images(root / "train", {"dark": 30, "light": 30}, 0)
    write_images(root / "test", {"dark": 8, "light": 8}, 1)
    (root / "train" / "dark" / "notes.txt").write_text("not an image: ignored")
    cache = tmp_path / "cache"
    cfg = {"name": "image_folder", "path": str(root), "image_size": [8, 8], "cache_dir": str(cache)}
    ds = load_dataset(cfg, 0)
    assert ds.classes == ("dark", "light") and ds.input_shape == (8, 8, 3)
    assert (len(ds.y_train) + len(ds.y_val), len(ds.y_test)) == (60, 16)
    assert "decoded" in ds.source
    (cached,) = (cache / "image_folder").glob("*.npz")
    again = load_dataset(cfg, 0)
    assert f"cache {cached}" in again.source
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    np.testing.assert_allclose(ds.x_train.mean((0, 1, 2)), 0, atol=1e-5)  # per channel
    grey = load_dataset({**cfg, "channels": 1}, 0)
    assert grey.input_shape == (8, 8, 1)
    # A changed image (new size and mtime) is decoded again: a new cache key.
    write_images(tmp_path / "extra", {"light": 1}, 2, size=(11, 12))
    shutil.copy(tmp_path / "extra" / "light" / "0.jpg", root / "test" / "light" / "0.jpg")
    assert "decoded" in load_dataset(cfg, 0).source
    assert len(list((cache / "image_folder").glob("*.npz"))) == 3
    summary = train(
        cli,
        tmp_path / "out",
        "recipe=cnn",
        "data=image_folder",
        f"data.path={root}",
        "data.image_size=[8,8]",
        f"data.cache_dir={cache}",
        "model=mlp",
        "model.features=[16]",
        "data.batch_size=16",
        "trainer.max_steps=30",
        "optim.lr=0.01",
    )
    assert summary["test"]["test/count"] == 16
    assert summary["test"]["test/accuracy"] == 1.0, summary["test"]


def test_image_folder_one_folder_layout_default_size(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write_images(root, {"dark": 10, "light": 15}, 0)
    ds = load_dataset({"name": "image_folder", "path": str(root), "cache_dir": str(tmp_path)}, 0)
    assert ds.input_shape == (10, 12, 3)  # the first image's size and channels
    assert len(ds.y_test) == 5 and len(ds.y_train) + len(ds.y_val) == 20


# ---------------------------------------------------------------- IDX: Fashion-MNIST, MNIST


def idx(array: np.ndarray) -> bytes:
    """A uint8 IDX file, written independently of dlx."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def fashion_like(n_train: int = 40, n_test: int = 20) -> dict[str, bytes]:
    """Tiny files laid out like Fashion-MNIST: brighter images than MNIST, labels 0..9."""
    rng = np.random.default_rng(7)
    return {
        "train-images-idx3-ubyte": idx(rng.integers(0, 256, (n_train, 28, 28))),
        "train-labels-idx1-ubyte": idx(np.arange(n_train) % 10),
        "t10k-images-idx3-ubyte": idx(rng.integers(0, 256, (n_test, 28, 28))),
        "t10k-labels-idx1-ubyte": idx((np.arange(n_test) * 7) % 10),
    }


@pytest.fixture
def fake_fashion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, bytes]:
    """Tiny Fashion-MNIST files with dlx's md5 table pointed at them; no network sources."""
    files = fashion_like()
    monkeypatch.setattr(
        sources, "FASHION_MD5", {n: hashlib.md5(d).hexdigest() for n, d in files.items()}
    )
    monkeypatch.setattr(sources, "FASHION_MIRRORS", ["http://127.0.0.1:9/fashion/"])
    monkeypatch.setattr(sources, "FASHION_DIR", tmp_path / "not-installed")
    monkeypatch.setattr(sources, "APT_COMMAND", "dlx-test-no-such-apt-get")
    return files


def test_fashion_mnist_from_installed_package_folder(
    cli, fake_fashion: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = tmp_path / "usr-share" / "fashion-mnist"
    installed.mkdir(parents=True)
    for name, data in fake_fashion.items():  # the package ships them gzipped
        (installed / f"{name}.gz").write_bytes(gzip.compress(data))
    monkeypatch.setattr(sources, "FASHION_DIR", installed)
    cache = tmp_path / "cache"
    # download=false: the installed package is local, so it is still used.
    cfg = {"name": "fashion_mnist", "cache_dir": str(cache), "download": False, "val_size": 10}
    ds = load_dataset(cfg, 0)
    assert ds.source == f"installed {installed} (saved to cache {cache / 'fashion_mnist'})"
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    raw = np.frombuffer(fake_fashion["t10k-images-idx3-ubyte"][16:], np.uint8)
    np.testing.assert_allclose(
        ds.x_test.ravel(), (raw / 255 - 0.2860) / 0.3530, rtol=1e-5, atol=1e-5
    )  # Fashion-MNIST's own statistics, not MNIST's
    for name, data in fake_fashion.items():
        assert (cache / "fashion_mnist" / name).read_bytes() == data
    assert load_dataset(cfg, 0).source == f"cache {cache / 'fashion_mnist'}"
    # A file of the wrong content in the package is refused by its md5.
    (cache / "fashion_mnist" / "t10k-labels-idx1-ubyte").unlink()
    (installed / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x01junk"))
    with pytest.raises(DataError) as info:
        load_dataset(cfg, 0)
    msg = str(info.value)
    assert (
        "t10k-labels-idx1-ubyte.gz: expected md5" in msg and "skipped (data.download=false)" in msg
    )


def test_fashion_mnist_trains_from_the_installed_folder(
    cli, fake_fashion: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = tmp_path / "installed"
    installed.mkdir()
    for name, data in fake_fashion.items():
        (installed / name).write_bytes(data)
    monkeypatch.setattr(sources, "FASHION_DIR", installed)
    summary = train(
        cli,
        tmp_path / "out",
        "recipe=fashion_mnist",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.val_size=8",
        "data.batch_size=8",
        "model.features=[4,4]",
        "model.dense=8",
        "trainer.max_steps=2",
    )
    assert summary["test"]["test/count"] == 20


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_fashion_mnist_apt_download_fallback(
    fake_fashion: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real .deb (dpkg-deb --build) that a fake `apt-get download` drops in its cwd.
    pkg = tmp_path / "pkg"
    data_dir = pkg / "usr" / "share" / "datasets" / "fashion-mnist"
    data_dir.mkdir(parents=True)
    for name, data in fake_fashion.items():
        (data_dir / f"{name}.gz").write_bytes(gzip.compress(data))
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN" / "control").write_text(
        "Package: dataset-fashion-mnist\nVersion: 0.1-1\nArchitecture: all\n"
        "Maintainer: test <t@example.org>\nDescription: test\n"
    )
    deb = tmp_path / "dataset-fashion-mnist_0.1-1_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(pkg), str(deb)], check=True, capture_output=True)
    args_log = tmp_path / "apt-args.txt"
    apt = tmp_path / "bin" / "apt-get"
    apt.parent.mkdir()
    apt.write_text(f'#!/bin/sh\necho "$@" > "{args_log}"\ncp "{deb}" .\n')
    apt.chmod(0o755)
    monkeypatch.setattr(sources, "APT_COMMAND", str(apt))
    cache = tmp_path / "cache"
    cfg = {"name": "fashion_mnist", "cache_dir": str(cache), "timeout": 2, "val_size": 10}
    ds = load_dataset(cfg, 0)
    assert ds.source == f"apt dataset-fashion-mnist (saved to cache {cache / 'fashion_mnist'})"
    assert args_log.read_text().split() == ["download", "dataset-fashion-mnist"]
    assert len(ds.y_test) == 20 and ds.num_classes == 10


def test_fashion_mnist_all_sources_fail_lists_them(fake_fashion: dict, tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset({"name": "fashion_mnist", "cache_dir": str(tmp_path), "timeout": 2}, 0)
    msg = str(info.value)
    assert msg.startswith("could not load Fashion-MNIST from any source")
    assert "not-installed not found (apt-get install dataset-fashion-mnist)" in msg
    assert "http://127.0.0.1:9/fashion/" in msg
    assert "apt dataset-fashion-mnist: 'dlx-test-no-such-apt-get'" in msg
    assert "fashion_mnist/ subfolder" in info.value.hint


def test_mnist_path_accepts_another_datasets_idx_files(cli, tmp_path: Path) -> None:
    folder = tmp_path / "fashion"
    folder.mkdir()
    for name, data in fashion_like().items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(data))
    ds = load_dataset({"name": "mnist", "path": str(folder), "val_size": 10}, 0)  # no md5 error
    assert ds.source == f"data.path {folder}" and len(ds.y_test) == 20
    np.testing.assert_array_equal(ds.y_test, (np.arange(20) * 7) % 10)
    summary = train(
        cli,
        tmp_path / "out",
        "recipe=cnn_small",
        f"data.path={folder}",
        "data.val_size=8",
        "data.batch_size=8",
        "model.features=4",
        "trainer.max_steps=2",
    )
    assert summary["test"]["test/count"] == 20


# ---------------------------------------------------------------- bad input -> exit 2


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _good(n: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.normal(size=(n, 4)).astype(np.float32),
        "y_train": np.arange(n) % 3,
        "x_test": rng.normal(size=(6, 4)).astype(np.float32),
        "y_test": np.arange(6) % 3,
    }


def bad_float_labels(tmp: Path) -> tuple[list[str], list[str]]:
    arrays = {**_good(), "y_train": (np.arange(20) % 3).astype(np.float64)}
    path = _npz(tmp / "float_labels.npz", **arrays)
    args = ["data=arrays", f"data.path={path}", "task=classify"]
    return args, [f"y_train in {path}", "float64", "must be integers", "task=regression"]


def bad_length_mismatch(tmp: Path) -> tuple[list[str], list[str]]:
    path = _npz(tmp / "mismatch.npz", **{**_good(), "y_train": np.arange(17) % 3})
    return ["data=arrays", f"data.path={path}"], [
        f"y_train in {path} has 17 entries",
        "x_train",
        "has 20 examples",
    ]


def bad_label_range(tmp: Path) -> tuple[list[str], list[str]]:
    y = np.arange(20) % 3
    y[13] = 5
    path = _npz(tmp / "range.npz", **{**_good(), "y_train": y})
    return ["data=arrays", f"data.path={path}", "data.num_classes=3"], [
        f"y_train in {path} has the label 5 at index 13",
        "[0, 3)",
        "data.num_classes=3",
    ]


def bad_nan(tmp: Path) -> tuple[list[str], list[str]]:
    arrays = _good()
    arrays["x_test"][4, 2] = np.nan
    path = _npz(tmp / "nan.npz", **arrays)
    return ["data=arrays", f"data.path={path}"], [
        f"x_test in {path} has nan at index (4, 2)",
        "NaN",
    ]


def bad_object_array(tmp: Path) -> tuple[list[str], list[str]]:
    folder = tmp / "objects"
    folder.mkdir()
    for name, a in _good().items():
        np.save(folder / f"{name}.npy", a)
    np.save(folder / "y_test.npy", np.array([1, "a", None], dtype=object), allow_pickle=True)
    return ["data=arrays", f"data.path={folder}"], [
        f"{folder / 'y_test.npy'} holds Python objects",
        "never unpickles",
    ]


def bad_lengths(tmp: Path) -> tuple[list[str], list[str]]:
    x = np.zeros((20, 5, 2), np.float32)
    lengths = np.full(20, 3)
    lengths[7] = 0
    arrays = {
        "x_train": x,
        "y_train": np.arange(20) % 2,
        "x_test": x[:4],
        "y_test": np.zeros(4, int),
    }
    path = _npz(tmp / "lengths.npz", **arrays, lengths_train=lengths, lengths_test=lengths[:4])
    return ["data=arrays", f"data.path={path}"], [
        f"lengths_train in {path} has the length 0 at index 7",
        "[1, 5]",
    ]


def bad_unknown_array(tmp: Path) -> tuple[list[str], list[str]]:
    path = _npz(tmp / "typo.npz", **_good(), lengths_tran=np.ones(20, int))
    return ["data=arrays", f"data.path={path}"], [f"data.path={path}", "lengths_tran"]


def bad_text_feature(tmp: Path) -> tuple[list[str], list[str]]:
    rows = [[i, "Paris" if i != 0 else "1.5", i % 2] for i in range(10)]
    path = write_csv(tmp / "cities.csv", ["age", "city", "label"], rows)
    return ["data=csv", f"data.path={path}"], [
        f"{path}: feature column 'city' is not numeric: line 3 has 'Paris'",
        "data.drop=[city]",
        "data.features=",
    ]


def bad_missing_value(tmp: Path) -> tuple[list[str], list[str]]:
    rows = [[i, "" if i == 4 else i * 2, i % 2] for i in range(10)]
    path = write_csv(tmp / "holes.csv", ["a", "b", "label"], rows)
    return ["data=csv", f"data.path={path}"], [
        f"{path}: feature column 'b' has an empty field (a missing value) at line 6",
    ]


def bad_ragged(tmp: Path) -> tuple[list[str], list[str]]:
    path = tmp / "ragged.csv"
    path.write_text("a,b,label\n1,2,0\n3,4,1\n5,1\n")
    return ["data=csv", f"data.path={path}"], [
        f"{path} line 4 has 2 fields, but the header has 3",
        "data.skip_rows",
    ]


def bad_target_column(tmp: Path) -> tuple[list[str], list[str]]:
    path = write_csv(tmp / "t.csv", ["a", "b", "label"], [[1, 2, 0], [3, 4, 1]] * 5)
    return ["data=csv", f"data.path={path}", "data.target=lable"], [
        f"{path} has no column 'lable' (data.target)",
        "Did you mean: label",
        "columns: a, b, label",
    ]


def bad_empty_csv(tmp: Path) -> tuple[list[str], list[str]]:
    path = tmp / "empty.csv"
    path.write_text("\n\n")
    return ["data=csv", f"data.path={path}"], [f"{path} is empty"]


def bad_image(tmp: Path) -> tuple[list[str], list[str]]:
    root = tmp / "imgs"
    write_images(root, {"dark": 3, "light": 3}, 0)
    broken = root / "light" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    return ["data=image_folder", f"data.path={root}", f"data.cache_dir={tmp / 'c'}"], [
        f"cannot decode the image {broken}",
    ]


def bad_empty_class(tmp: Path) -> tuple[list[str], list[str]]:
    root = tmp / "imgs"
    write_images(root, {"dark": 3, "light": 3}, 0)
    (root / "medium").mkdir()
    (root / "medium" / "readme.txt").write_text("no images here")
    return ["data=image_folder", f"data.path={root}", f"data.cache_dir={tmp / 'c'}"], [
        f"the class folder {root / 'medium'} has no images",
    ]


def bad_no_class_folders(tmp: Path) -> tuple[list[str], list[str]]:
    root = tmp / "imgs"
    write_images(root, {"dark": 3}, 0)
    flat = root / "dark"
    return ["data=image_folder", f"data.path={flat}", f"data.cache_dir={tmp / 'c'}"], [
        f"{flat} has no class sub-folders",
        "<class name>",
    ]


def bad_mnist_labels(tmp: Path) -> tuple[list[str], list[str]]:
    folder = tmp / "idx"
    folder.mkdir()
    files = fashion_like()
    labels = np.arange(40) % 10
    labels[11] = 12
    files["train-labels-idx1-ubyte"] = idx(labels)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return ["data=mnist", f"data.path={folder}"], [
        "train-labels-idx1-ubyte",
        f"data.path {folder}",
        "found 12 at index 11",
    ]


BAD = [
    bad_float_labels,
    bad_length_mismatch,
    bad_label_range,
    bad_nan,
    bad_object_array,
    bad_lengths,
    bad_unknown_array,
    bad_text_feature,
    bad_missing_value,
    bad_ragged,
    bad_target_column,
    bad_empty_csv,
    bad_image,
    bad_empty_class,
    bad_no_class_folders,
    bad_mnist_labels,
]


@pytest.mark.parametrize("make", BAD, ids=[f.__name__[4:] for f in BAD])
def test_bad_input_exits_2_naming_the_file_and_the_fix(cli, tmp_path: Path, make) -> None:
    args, needles = make(tmp_path)
    out = tmp_path / "outputs"
    result = cli("train", "recipe=cnn", "model=mlp", *args, f"outputs.dir={out}")
    text = result.output
    assert result.exit_code == 2, text
    assert isinstance(result.exception, SystemExit), result.exception  # no crash
    assert "Traceback" not in text and text.lstrip().startswith("error:"), text
    assert "fix:" in text, text
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text}"
    assert not out.exists(), "a run that cannot start writes nothing"
