"""Data-parallel strategies behind one interface: `single`, `pmap` and `sharded`.

The loop, eval and checkpointing only ever call a Strategy: `place` the state, feed it
global batches, read metrics back with `to_host`, and `unreplicate` before saving. Checkpoints
always hold one plain copy of the state, so a run saved under one strategy or device count
restores under any other.

For the same global batch the three give the same numbers (tested): `sharded` is the global
computation with XLA inserting the all-reduce; `pmap` sums each device's loss over its shard,
divides by the global label count and averages gradients with `lax.pmean`. One exception:
dropout masks under `pmap` are drawn per device, so with dropout the runs are statistically,
not bitwise, equivalent.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dlx.errors import UserError
from dlx.train.step import (
    TrainState,
    compiled_train_step,
    eval_step,
    masked_loss_and_hits,
    train_step,
)

STRATEGIES = ("auto", "single", "pmap", "sharded")


def to_host(tree: Any) -> Any:
    """Device values as numpy; works for arrays spread over several processes too."""

    def one(x: Any) -> Any:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    return jax.tree_util.tree_map(one, tree)


class Strategy:
    """Single device: plain jit."""

    name = "single"

    def __init__(self, devices: list[Any]) -> None:
        self.devices = devices
        self.n = len(devices)

    def check_batch(self, batch_size: int, what: str = "data.batch_size") -> None:
        per_process = batch_size / jax.process_count()
        if batch_size % self.n or per_process != int(per_process):
            raise UserError(
                f"{what}={batch_size} cannot be split evenly over {self.n} devices "
                f"({self.name}, {jax.process_count()} process(es))",
                hint=f"use a multiple of {self.n}, e.g. {what}={_round_up(batch_size, self.n)}, "
                f"or parallel=single",
            )

    def eval_batch_size(self, requested: int, examples: int) -> int:
        """The batch to evaluate `examples` examples in, rounded up to split evenly (eval
        batches are padded and masked, so any size works). A split smaller than `requested`
        is one batch of its own size: padding 100 val examples to 1000 would compute ten
        times the forward passes."""
        return _round_up(max(1, min(requested, examples)), self.n)

    def place(self, state: TrainState) -> TrainState:
        return jax.device_put(state, self.devices[0])

    def batch(self, x: np.ndarray) -> Any:
        return x

    def train_step(self, state: TrainState, x: Any, y: Any) -> tuple[TrainState, dict]:
        return compiled_train_step()(state, x, y)

    def eval_step(self, state: TrainState, x: Any, y: Any, mask: Any) -> dict:
        return _jit_eval(state, x, y, mask)

    def unreplicate(self, state: TrainState) -> TrainState:
        return state

    def describe(self) -> str:
        return f"{self.name} on {self.devices[0]}"


_jit_eval = jax.jit(eval_step)


class ShardedStrategy(Strategy):
    """jit with the batch sharded over a 1-D `data` mesh and the state replicated.

    Works across processes (multi-host): every process loads the same data and feeds its
    slice of each global batch; XLA's all-reduce spans every device of every process.
    """

    name = "sharded"

    def __init__(self, devices: list[Any]) -> None:
        super().__init__(devices)
        self.mesh = Mesh(np.array(devices), ("data",))
        self.replicated = NamedSharding(self.mesh, P())
        self.split = NamedSharding(self.mesh, P("data"))
        self._train = jax.jit(train_step, out_shardings=self.replicated)
        self._eval = jax.jit(eval_step, out_shardings=self.replicated)

    def place(self, state: TrainState) -> TrainState:
        put = functools.partial(jax.make_array_from_process_local_data, self.replicated)
        return jax.tree_util.tree_map(lambda a: put(np.asarray(a)), state)

    def batch(self, x: np.ndarray) -> Any:
        # Each process feeds its contiguous slice of the global batch, in process order.
        per = len(x) // jax.process_count()
        local = x[jax.process_index() * per : (jax.process_index() + 1) * per]
        return jax.make_array_from_process_local_data(self.split, local, x.shape)

    def train_step(self, state: TrainState, x: Any, y: Any) -> tuple[TrainState, dict]:
        return self._train(state, x, y)

    def eval_step(self, state: TrainState, x: Any, y: Any, mask: Any) -> dict:
        return self._eval(state, x, y, mask)

    def unreplicate(self, state: TrainState) -> TrainState:
        return jax.tree_util.tree_map(jnp.asarray, to_host(state))

    def describe(self) -> str:
        hosts = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
        return f"sharded (jit + NamedSharding) over {self.n} devices{hosts}"


class PmapStrategy(Strategy):
    """jax.pmap over local devices: state replicated with a leading device axis."""

    name = "pmap"

    def __init__(self, devices: list[Any]) -> None:
        super().__init__(devices)
        self.local = [d for d in devices if d.process_index == jax.process_index()]
        # pmap takes arrays already laid out over these devices (or numpy), not ones
        # committed to a single device (DESIGN.md).
        self.layout = NamedSharding(Mesh(np.array(self.local), ("b",)), P("b"))
        # pmap's `devices` must be left unset across processes (it then uses all of them).
        devs = {"devices": self.local} if jax.process_count() == 1 else {}
        donate = (0,) if jax.default_backend() != "cpu" else ()  # see compiled_train_step
        self._train = jax.pmap(_pmap_train_step, axis_name="batch", donate_argnums=donate, **devs)
        self._eval = jax.pmap(_pmap_eval_step, axis_name="batch", **devs)

    def place(self, state: TrainState) -> TrainState:
        k = len(self.local)
        return jax.tree_util.tree_map(
            lambda a: jax.device_put(
                np.broadcast_to(np.asarray(a), (k, *np.shape(a))), self.layout
            ),
            state,
        )

    def batch(self, x: np.ndarray) -> Any:
        per = len(x) // jax.process_count()
        local = x[jax.process_index() * per : (jax.process_index() + 1) * per]
        return local.reshape(len(self.local), -1, *local.shape[1:])

    def train_step(self, state: TrainState, x: Any, y: Any) -> tuple[TrainState, dict]:
        state, metrics = self._train(state, x, y)
        return state, jax.tree_util.tree_map(lambda m: m[0], metrics)

    def eval_step(self, state: TrainState, x: Any, y: Any, mask: Any) -> dict:
        return jax.tree_util.tree_map(lambda m: m[0], self._eval(state, x, y, mask))

    def unreplicate(self, state: TrainState) -> TrainState:
        return jax.tree_util.tree_map(lambda a: jnp.asarray(to_host(a[0])), state)

    def describe(self) -> str:
        return f"pmap over {len(self.local)} local devices"


def _pmap_train_step(state: TrainState, x: jax.Array, y: jax.Array) -> tuple[TrainState, dict]:
    """Per-device step: loss sum over the shard / global label count, grads pmean'd."""
    n_dev = jax.lax.psum(1, "batch")
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), jax.lax.axis_index("batch"))
    _, _, valid = masked_loss_and_hits(jnp.zeros((*y.shape, 1)), y)
    global_n = jnp.maximum(jax.lax.psum(valid.sum(), "batch"), 1.0)

    def loss_fn(params: Any) -> tuple[jax.Array, jax.Array]:
        logits = state.apply_fn({"params": params}, x, train=True, rngs={"dropout": rng})
        loss, hits, _ = masked_loss_and_hits(logits, y)
        # Scaled so that the pmean over devices is the global mean.
        return loss.sum() * n_dev / global_n, hits.sum() * n_dev / global_n

    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, "batch")
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": jax.lax.pmean(loss, "batch"),
        "accuracy": jax.lax.pmean(acc, "batch"),
        "grad_norm": optax.tree.norm(grads),
    }
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def _pmap_eval_step(state: TrainState, x: jax.Array, y: jax.Array, mask: jax.Array) -> dict:
    return jax.lax.psum(eval_step(state, x, y, mask), "batch")


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def make_strategy(name: str, n_devices: int | None = None) -> Strategy:
    """The strategy `parallel.name` asks for, over the first `n_devices` (default: all)."""
    if name not in STRATEGIES:
        raise UserError(
            f"unknown parallel strategy '{name}'", hint=f"parallel={'|'.join(STRATEGIES)}"
        )
    devices = jax.devices()
    if n_devices is not None:
        if not 1 <= n_devices <= len(devices):
            raise UserError(
                f"parallel.devices={n_devices}, but {len(devices)} devices exist",
                hint=f"use parallel.devices between 1 and {len(devices)} or null",
            )
        devices = devices[:n_devices]
    if name == "auto":
        name = "sharded" if len(devices) > 1 else "single"
    if name == "single":
        if jax.process_count() > 1:
            raise UserError(
                "parallel=single cannot span several processes",
                hint="use parallel=sharded (or auto) for multi-host runs",
            )
        return Strategy(devices[:1])
    if name == "pmap":
        if jax.process_count() > 1 and n_devices is not None:
            raise UserError("parallel.devices cannot be combined with pmap across processes")
        return PmapStrategy(devices)
    return ShardedStrategy(devices)
