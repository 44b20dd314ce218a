"""Character-level language modelling data: text -> (chunks of ids, next-char targets).

Split is contiguous, in text order: the first 90% trains, the next ``val_size`` (5%)
validates, the last ``test_size`` (5%) tests, so held-out text is text the model never saw
any part of (a random split of chunks would leak neighbouring sentences). The vocabulary
comes from the training text only: id 0 is padding, id 1 stands for characters that only
occur in val/test, the rest are the training characters in code-point order.

Each split is cut into chunks of ``seq_len``: x = ids[i : i + T], y = ids[i + 1 : i + T + 1].
Every character but a split's first is a target exactly once, so the eval loss (mean over
valid labels) is nats per character; the last chunk is padded (x 0, y -1: ignored).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dlx.data.config import get_limit
from dlx.data.dataset import Dataset
from dlx.data.splits import check_seed
from dlx.data.text_sources import fetch_text
from dlx.errors import DataError

PAD, UNKNOWN = 0, 1
SPECIAL = ("<pad>", "<unk>")


def _fraction(cfg: Mapping[str, Any], key: str, default: float) -> float:
    value = cfg.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, float) or not 0.0 < value < 0.5:
        raise DataError(f"data.{key} must be a fraction of the text in (0, 0.5), got {value!r}")
    return value


def _seq_len(cfg: Mapping[str, Any]) -> int:
    value = cfg.get("seq_len", 256)
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise DataError(f"data.seq_len must be an integer >= 2, got {value!r}")
    return value


def code_points(text: str) -> np.ndarray:
    """The text's Unicode code points as uint32 (fast: no Python loop over characters)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def build_vocab(train_text: str) -> tuple[str, ...]:
    chars = np.unique(code_points(train_text))
    return (*SPECIAL, *(chr(int(c)) for c in chars))


def encode(text: str, vocab: tuple[str, ...]) -> np.ndarray:
    """Token ids of ``text``; characters not in ``vocab`` become UNKNOWN."""
    known = np.array([ord(c) for c in vocab[len(SPECIAL) :]], dtype=np.uint32)  # sorted
    cps = code_points(text)
    pos = np.searchsorted(known, cps).clip(max=max(len(known) - 1, 0))
    hit = known[pos] == cps if len(known) else np.zeros(len(cps), bool)
    return np.where(hit, pos + len(SPECIAL), UNKNOWN).astype(np.int32)


def chunk(ids: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y), each (ceil((len - 1) / T), T): inputs and next-token targets, padded at the end."""
    n = max(len(ids) - 1, 0)
    rows = -(-n // seq_len)
    x = np.full(rows * seq_len, PAD, np.int32)
    y = np.full(rows * seq_len, -1, np.int32)
    x[:n], y[:n] = ids[:-1], ids[1:]
    return x.reshape(rows, seq_len), y.reshape(rows, seq_len)


def load_text(cfg: Mapping[str, Any], seed: int) -> Dataset:
    """A character LM dataset from data.path or the default corpus (dlx.data.text_sources)."""
    check_seed(seed)  # the split is contiguous, so the seed only orders batches (in the loop)
    seq_len = _seq_len(cfg)
    val_frac, test_frac = _fraction(cfg, "val_size", 0.05), _fraction(cfg, "test_size", 0.05)
    text, source = fetch_text(cfg)
    n_val, n_test = round(len(text) * val_frac), round(len(text) * test_frac)
    n_train = len(text) - n_val - n_test
    if min(n_val, n_test) < 2 or n_train < seq_len + 1:
        raise DataError(
            f"the text has {len(text)} characters: too short to split into train "
            f"({n_train}), val ({n_val}) and test ({n_test}) with data.seq_len={seq_len}",
            hint="use a longer text or a smaller data.seq_len",
        )
    parts = text[:n_train], text[n_train : n_train + n_val], text[n_train + n_val :]
    vocab = build_vocab(parts[0])
    (x_tr, y_tr), (x_val, y_val), (x_te, y_te) = (chunk(encode(p, vocab), seq_len) for p in parts)
    limit_train, limit_eval = get_limit(cfg, "limit_train"), get_limit(cfg, "limit_eval")
    return Dataset(
        name="text",
        x_train=x_tr[:limit_train],
        y_train=y_tr[:limit_train],
        x_val=x_val[:limit_eval],
        y_val=y_val[:limit_eval],
        x_test=x_te[:limit_eval],
        y_test=y_te[:limit_eval],
        num_classes=len(vocab),
        input_shape=(seq_len,),
        source=f"{source}: {len(text):,} characters, {len(vocab) - len(SPECIAL)} distinct",
        task="lm",
        vocab=vocab,
    )
