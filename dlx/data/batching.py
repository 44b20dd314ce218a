"""Index batches for training and evaluation, always of one fixed size.

Every batch has exactly ``batch_size`` rows so a jitted step compiles once: a differently
shaped last batch would trigger a second compilation (and, on accelerators, a slow one).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from dlx.errors import DataError


def _check_sizes(n: int, batch_size: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise DataError(f"number of examples must be a non-negative integer, got {n!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise DataError(f"data.batch_size must be a positive integer, got {batch_size!r}")
    if batch_size < 1:
        raise DataError(f"data.batch_size must be a positive integer, got {batch_size!r}")


def quasi_random(rng: np.random.Generator, n: int, block: int, window: int) -> np.ndarray:
    """A permutation of 0..n-1 with locality, for data read from disk (FFCV's QUASI_RANDOM):
    blocks of `block` consecutive rows in random order, then rows shuffled within each run of
    `window` blocks. A batch draws from about `window` blocks, and those blocks' disk pages
    serve the next `block * window / batch_size` batches too: far fewer reads than one page per
    row. Every row still comes once per epoch; the mixing is only as good as the file's own
    order is random (write the file shuffled: `ShardWriter` users add chunks in random order)."""
    starts = rng.permutation(-(-n // block)) * block
    rows = (starts[:, None] + np.arange(block)[None, :]).reshape(-1)
    rows = rows[rows < n]
    keys = rng.random(n)  # one sort: by window, then by a random key within it
    return rows[np.lexsort((keys, np.arange(n) // (block * window)))]


def epoch_batches(
    n: int,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    block: int = 0,
    window: int = 1,
) -> Iterator[np.ndarray]:
    """Yield ``n // batch_size`` index arrays of exactly ``batch_size`` for one training epoch.

    The order is a permutation from ``np.random.default_rng([seed, epoch])``: reproducible for
    a given (seed, epoch) and different from one epoch to the next. The last partial batch is
    dropped (one compiled shape); since the order is reshuffled every epoch, the dropped
    examples differ each epoch, so no example is systematically never trained on.
    ``shuffle=False`` gives sequential order (same drop rule); ``block > 0`` the quasi-random
    order of ``quasi_random`` (same generator, same drop rule).
    """
    _check_sizes(n, batch_size)
    if n < batch_size:
        raise DataError(
            f"data.batch_size={batch_size} is larger than the training set ({n} examples), "
            "so an epoch would have no full batch",
            hint=f"lower data.batch_size to at most {n}",
        )
    if shuffle and block > 0:
        order = quasi_random(np.random.default_rng([int(seed), int(epoch)]), n, block, window)
    elif shuffle:
        order = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
    else:
        order = np.arange(n)
    for start in range(0, n - batch_size + 1, batch_size):
        yield order[start : start + batch_size]


def eval_batches(n: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (indices, mask) covering 0..n-1 in order, each exactly ``batch_size`` long.

    The final batch is padded with index 0 and ``mask=False`` for the padding, so every
    example is counted exactly once (weight metrics by the mask) with one compiled shape.
    """
    _check_sizes(n, batch_size)
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        mask = np.ones(batch_size, dtype=bool)
        if len(idx) < batch_size:
            mask[len(idx) :] = False
            idx = np.concatenate([idx, np.zeros(batch_size - len(idx), dtype=idx.dtype)])
        yield idx, mask
