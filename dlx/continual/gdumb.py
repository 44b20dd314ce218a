"""GDumb (Prabhu, Torr & Dokania 2020, "GDumb: A Simple Approach that Questions Our Progress
in Continual Learning"): a greedy class-balanced memory of k examples filled from the stream,
and after each task a model trained from scratch on the memory alone. numpy only.

The sampler: an example joins while the memory has room; once it is full, an example of a
class holding fewer than k / (classes seen so far) slots evicts a random example of the
largest class. Nothing else of the stream is kept, and nothing of the previous model.

Here the memory after each task is computed once, at plan time, from the run's seed (the
stream's examples offered in a seeded order within each task): a pure function of the
config, so a resumed run rebuilds exactly the memory it had, with nothing to checkpoint.
Entries are (task, row) pairs: on a permuted stream each row is shown through its own
task's permutation, on a task-incremental one with its own task's head mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def class_balanced_memories(
    tasks: Sequence[np.ndarray], labels: np.ndarray, capacity: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The memory after each task of the stream: (task ids, rows) per task, rows into
    `labels`' arrays. `tasks[t]` are task t's training rows, offered in a seeded order."""
    rng = np.random.default_rng([seed, 4242])
    slots: dict[int, list[tuple[int, int]]] = {}  # class -> its (task, row) entries
    size, out = 0, []
    for t, rows in enumerate(tasks):
        for row in rng.permutation(np.asarray(rows)):
            c = int(labels[row])
            members = slots.setdefault(c, [])
            if size < capacity:
                members.append((t, int(row)))
                size += 1
            elif len(members) < capacity // len(slots):
                largest = max(slots.values(), key=len)
                j = int(rng.integers(len(largest)))
                largest[j] = largest[-1]  # swap-remove a random entry of the largest class
                largest.pop()
                members.append((t, int(row)))
        entries = [e for c in sorted(slots) for e in slots[c]]
        task_ids = np.array([e[0] for e in entries], np.int32)
        out.append((task_ids, np.array([e[1] for e in entries], np.int64)))
    return out
