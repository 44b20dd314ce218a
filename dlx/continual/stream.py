"""Task streams built from one classification dataset: split (groups of classes) and
permuted (one fixed pixel permutation per task). numpy only.

A task holds indices into the dataset's arrays, not copies: ten permuted copies of MNIST
would be 1.7 GB, so permutations are applied per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlx.continual.config import ContinualConfig
from dlx.errors import UserError


@dataclass(frozen=True, eq=False)
class Task:
    name: str
    classes: tuple[int, ...]  # labels this task's examples can have
    train_idx: np.ndarray  # rows of the dataset's training split
    eval_idx: np.ndarray  # rows of the evaluation split (test or val)
    perm: np.ndarray | None = None  # flat pixel permutation, None = the images as they are


@dataclass(frozen=True, eq=False)
class Stream:
    tasks: list[Task]
    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    num_classes: int
    # allowed[t, c]: may the model predict class c on task t (the task-incremental head mask)
    allowed: np.ndarray

    def train_batch(self, t: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Task t's training examples at `rows` (positions within the task)."""
        idx = self.tasks[t].train_idx[rows]
        return permute(self.x_train[idx], self.tasks[t].perm), self.y_train[idx]

    def eval_batch(self, t: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = self.tasks[t].eval_idx[rows]
        return permute(self.x_eval[idx], self.tasks[t].perm), self.y_eval[idx]


def permute(x: np.ndarray, perm: np.ndarray | None) -> np.ndarray:
    if perm is None:
        return x
    return x.reshape(len(x), -1)[:, perm].reshape(x.shape)


def class_groups(tasks: Any, num_classes: int) -> list[tuple[int, ...]]:
    """`tasks` as class groups: a count splits 0..C-1 in order into equal groups."""
    if isinstance(tasks, int) and not isinstance(tasks, bool):
        if tasks < 1 or num_classes % tasks:
            raise UserError(
                f"continual.tasks={tasks} cannot split {num_classes} classes into equal tasks",
                hint="use a divisor of the class count, or list the classes: "
                "continual.tasks=[[0,1],[2,3,4]]",
            )
        size = num_classes // tasks
        return [tuple(range(i * size, (i + 1) * size)) for i in range(tasks)]
    if not isinstance(tasks, Sequence) or isinstance(tasks, str) or not tasks:
        raise UserError(
            f"continual.tasks must be a count or a list of class lists, got {tasks!r}",
            hint="e.g. continual.tasks=5 or continual.tasks=[[0,1],[2,3]]",
        )
    groups, seen = [], set()
    for group in tasks:
        if isinstance(group, int) and not isinstance(group, bool):
            group = [group]
        if not isinstance(group, Sequence) or isinstance(group, str) or not group:
            raise UserError(f"continual.tasks: each task is a non-empty list of classes: {group!r}")
        for c in group:
            if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num_classes:
                raise UserError(
                    f"continual.tasks: class {c!r} is not one of the dataset's classes "
                    f"0..{num_classes - 1}"
                )
            if c in seen:
                raise UserError(f"continual.tasks: class {c} is in more than one task")
            seen.add(c)
        groups.append(tuple(int(c) for c in group))
    return groups


def build_stream(ccfg: ContinualConfig, data: Any, seed: int, batch_size: int) -> Stream:
    """The tasks of `ccfg` over `data` (a dlx.data.Dataset); UserError on bad settings."""
    if getattr(data, "task", "classify") != "classify" or data.y_train.ndim != 1:
        raise UserError(
            f"continual streams need a classification dataset; {data.name} is not one",
            hint="use data=mnist or data=digits",
        )
    x_eval, y_eval = (data.x_test, data.y_test)
    if ccfg.eval_split == "val":
        x_eval, y_eval = data.x_val, data.y_val
    c = data.num_classes
    tasks = []
    if ccfg.stream == "split":
        for classes in class_groups(ccfg.tasks, c):
            tasks.append(
                Task(
                    name="/".join(map(str, classes)),
                    classes=classes,
                    train_idx=np.flatnonzero(np.isin(data.y_train, classes)),
                    eval_idx=np.flatnonzero(np.isin(y_eval, classes)),
                )
            )
    else:
        n = ccfg.tasks
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UserError(
                f"continual.tasks must be a positive count for stream=permuted: {n!r}",
                hint="e.g. continual.tasks=5",
            )
        size = int(np.prod(data.input_shape))
        rng = np.random.default_rng([seed, 1234])  # the permutations depend on the seed only
        for t in range(n):
            tasks.append(
                Task(
                    name=f"perm{t}",
                    classes=tuple(range(c)),
                    train_idx=np.arange(len(data.y_train)),
                    eval_idx=np.arange(len(y_eval)),
                    perm=None if t == 0 else rng.permutation(size),
                )
            )
    for task in tasks:
        if len(task.train_idx) < batch_size:
            raise UserError(
                f"task {task.name} has {len(task.train_idx)} training examples, fewer than "
                f"data.batch_size={batch_size}",
                hint=f"lower data.batch_size to at most {len(task.train_idx)} "
                "(or raise data.limit_train)",
            )
        if len(task.eval_idx) == 0:
            raise UserError(f"task {task.name} has no {ccfg.eval_split} examples")
    allowed = np.ones((len(tasks), c), bool)
    if ccfg.scenario == "task":
        allowed[:] = False
        for t, task in enumerate(tasks):
            allowed[t, list(task.classes)] = True
    return Stream(tasks, data.x_train, data.y_train, x_eval, y_eval, c, allowed)
