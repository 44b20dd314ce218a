"""A bounded replay buffer filled by reservoir sampling (Vitter's algorithm R). numpy only.

After n examples have streamed past, each one is in the buffer with probability
capacity / n, whatever task it came from: no task boundaries needed.
"""

from __future__ import annotations

import numpy as np


class ReservoirBuffer:
    def __init__(
        self, capacity: int, x_shape: tuple[int, ...], x_dtype: np.dtype, seed: int
    ) -> None:
        self.capacity = int(capacity)
        self.x = np.zeros((self.capacity, *x_shape), x_dtype)
        self.y = np.full(self.capacity, -1, np.int32)
        self.task = np.zeros(self.capacity, np.int32)
        self.seen = 0  # examples offered so far
        self.rng = np.random.default_rng(seed)

    @property
    def size(self) -> int:
        return min(self.seen, self.capacity)

    def add(self, x: np.ndarray, y: np.ndarray, task: int | np.ndarray) -> None:
        """Offer a batch: while filling, every example is kept; afterwards the k-th example
        seen replaces a random slot with probability capacity / k."""
        tasks = np.broadcast_to(np.asarray(task, np.int32), y.shape)
        seen = self.seen + np.arange(len(y))  # how many came before each example
        slot = np.where(seen < self.capacity, seen, self.rng.integers(0, seen + 1))
        for i in np.flatnonzero(slot < self.capacity):  # in order: a later example wins a slot
            s = slot[i]
            self.x[s], self.y[s], self.task[s] = x[i], y[i], tasks[i]
        self.seen += len(y)

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """n examples drawn uniformly (with replacement) from the buffer. While it is empty,
        zeros with label -1, which the loss ignores: the batch keeps one shape."""
        if self.size == 0:
            return (
                np.zeros((n, *self.x.shape[1:]), self.x.dtype),
                np.full(n, -1, np.int32),
                np.zeros(n, np.int32),
            )
        idx = self.rng.integers(0, self.size, n)
        return self.x[idx], self.y[idx], self.task[idx]

    # ---- checkpointing: the buffer and its random state, so a resumed run draws the same
    def arrays(self) -> dict[str, np.ndarray]:
        # Copies: checkpoints are written asynchronously while the buffer keeps changing.
        return {
            "x": self.x.copy(),
            "y": self.y.copy(),
            "task": self.task.copy(),
            "seen": np.asarray(self.seen),
        }

    def rng_state(self) -> dict:
        return self.rng.bit_generator.state

    def load(self, arrays: dict, rng_state: dict) -> None:
        self.x[...], self.y[...] = np.asarray(arrays["x"]), np.asarray(arrays["y"])
        self.task[...] = np.asarray(arrays["task"])
        self.seen = int(np.asarray(arrays["seen"]))
        self.rng.bit_generator.state = rng_state
