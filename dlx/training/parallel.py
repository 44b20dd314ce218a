"""Data-parallel strategies behind one interface: `single`, `pmap`, `sharded` and `fsdp`.

Each wraps the task's one step function (dlx/tasks): plain jit, jit with the batch sharded
over a mesh (XLA inserts the all-reduce), or pmap with the task's `axis` helpers turning
per-device sums into global ones. The loop, eval and checkpointing only ever call a Strategy:
`place` the state, feed it global batches (dicts of arrays), read metrics back with `to_host`,
and `unreplicate` for a plain one-device copy (eval of the best params, test, `epoch_end`).
A checkpoint saves `checkpoint_state`: one plain copy, or under `fsdp` the sharded state
itself (Orbax writes each device's shard; nothing is gathered). Either restores under any
strategy and device count: restoring reads into the template's layout, then `place`.

For the same global batch the four give the same numbers (tested). One exception: dropout
masks under `pmap` are drawn per device, so with dropout the runs are statistically, not
bitwise, equivalent.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dlx.errors import UserError
from dlx.training.step import TrainState

STRATEGIES = ("auto", "single", "pmap", "sharded", "fsdp")


def to_host(tree: Any) -> Any:
    """Device values as numpy; works for arrays spread over several processes too."""

    def one(x: Any) -> Any:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    return jax.tree_util.tree_map(one, tree)


def train_step(task: Any, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    return task.train_step(state, batch, None)


def eval_step(task: Any, state: TrainState, batch: dict) -> dict:
    return task.eval_step(state, batch, None)


@functools.cache
def compiled_train_step(donate: bool | None = None) -> Any:
    """`task.train_step` jitted (the task static), compiled once per process and task.

    Donating the state lets XLA update params in place: it saves accelerator memory, but on
    XLA:CPU it measured ~5% slower here (1036 vs 1092 samples/s, CNN recipe), so by default
    the state is donated everywhere but on the CPU.
    """
    if donate is None:
        donate = jax.default_backend() != "cpu"
    return jax.jit(train_step, static_argnums=0, donate_argnums=1 if donate else ())


_jit_eval = jax.jit(eval_step, static_argnums=0)


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

    def local_rows(self, rows: np.ndarray) -> np.ndarray:
        """The part of a global batch's row indices this process reads and feeds (all of
        them on one process): a disk-backed dataset then reads only its own rows."""
        return _local_slice(rows)

    def batch(self, batch: dict) -> Any:
        """A global batch (every process holds all of it) as the step's input."""
        return self.local_batch(jax.tree_util.tree_map(_local_slice, batch))

    def local_batch(self, batch: dict) -> Any:
        """This process's rows of a global batch (`local_rows`) as the step's input."""
        return batch

    def checkpoint_state(self, state: TrainState) -> TrainState:
        """What a checkpoint saves of the placed state: one plain copy by default."""
        return self.unreplicate(state)

    def train_step(self, task: Any, state: TrainState, batch: Any) -> tuple[TrainState, dict]:
        return compiled_train_step()(task, state, batch)

    def eval_step(self, task: Any, state: TrainState, batch: Any) -> dict:
        return _jit_eval(task, state, batch)

    def unreplicate(self, state: TrainState) -> TrainState:
        return state

    def describe(self) -> str:
        return f"{self.name} on {self.devices[0]}"


def _local_slice(x: np.ndarray) -> np.ndarray:
    """This process's contiguous slice of a global batch, in process order."""
    per = len(x) // jax.process_count()
    return x[jax.process_index() * per : (jax.process_index() + 1) * per]


@functools.cache
def _sharded_steps(devices: tuple) -> tuple[Any, Any, NamedSharding, NamedSharding]:
    """jit with replicated outputs over a mesh of `devices`, once per device set (so every
    run on the same devices reuses the compiled step)."""
    mesh = Mesh(np.array(devices), ("data",))
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    train = jax.jit(train_step, static_argnums=0, out_shardings=replicated)
    evaluate = jax.jit(eval_step, static_argnums=0, out_shardings=replicated)
    return train, evaluate, replicated, split


class ShardedStrategy(Strategy):
    """jit with the batch sharded over a 1-D `data` mesh and the state replicated.

    Works across processes (multi-host): every process loads the same data and feeds its
    slice of each global batch; XLA's all-reduce spans every device of every process.
    """

    name = "sharded"

    def __init__(self, devices: list[Any]) -> None:
        super().__init__(devices)
        self._train, self._eval, self.replicated, self.split = _sharded_steps(tuple(devices))

    def place(self, state: TrainState) -> TrainState:
        put = functools.partial(jax.make_array_from_process_local_data, self.replicated)
        return jax.tree_util.tree_map(lambda a: put(np.asarray(a)), state)

    def local_batch(self, batch: dict) -> Any:
        procs = jax.process_count()
        return jax.tree_util.tree_map(
            lambda x: jax.make_array_from_process_local_data(
                self.split, x, (len(x) * procs, *x.shape[1:])
            ),
            batch,
        )

    def train_step(self, task: Any, state: TrainState, batch: Any) -> tuple[TrainState, dict]:
        return self._train(task, state, batch)

    def eval_step(self, task: Any, state: TrainState, batch: Any) -> dict:
        return self._eval(task, state, batch)

    def unreplicate(self, state: TrainState) -> TrainState:
        return jax.tree_util.tree_map(jnp.asarray, to_host(state))

    def describe(self) -> str:
        hosts = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
        return f"sharded (jit + NamedSharding) over {self.n} devices{hosts}"


# fsdp leaves an array with fewer elements than this replicated. Each sharded array costs an
# all-gather before the step uses it and a reduce-scatter of its gradient; for a bias or a
# LayerNorm scale (d_model values) that fixed cost buys next to nothing. 2**12 elements
# (16 KiB in fp32) shards the kernels and embeddings that hold nearly all of a model's bytes
# and none of its vectors; a tiny first conv (3x3x1x16) or a 64x10 head stays replicated
# (the transformer recipe: 54 of 163 arrays sharded, 1.2 of 9.3 MiB per device on 8).
# big_vision's fsdp rule (big_vision/sharding.py) draws the line at 4 MiB, a size meant for
# models of billions of parameters: at the sizes of dlx's recipes it would shard nothing.
FSDP_MIN_SIZE = 2**12


def fsdp_spec(shape: tuple[int, ...], n: int, min_size: int = FSDP_MIN_SIZE) -> P:
    """The fsdp rule for one array over `n` devices: split its largest dimension that `n`
    divides (the earlier one on a tie) over the `data` axis; replicated when it is smaller
    than `min_size` elements (scalars, biases, norms) or when no dimension divides."""
    if n > 1 and math.prod(shape) >= min_size:
        for i in sorted(range(len(shape)), key=lambda d: -shape[d]):
            if shape[i] % n == 0:
                return P(*([None] * i), "data")
    return P()


def fsdp_train_step(
    mesh: Mesh, min_size: int, task: Any, state: TrainState, batch: dict
) -> tuple[TrainState, dict]:
    """The task's step with the new state held to the fsdp layout and the metrics
    replicated. The input state arrives laid out by `FsdpStrategy.place`.

    The params are asked for whole (replicated) as the step starts: XLA all-gathers each one
    (scheduling the collectives where it likes) and the compute stays pure data parallel,
    each device on its slice of the batch. Left to itself, XLA's sharding propagation would
    carry the params' layout into the activations (convolution channels split over the
    devices), and on the CNN it then warned of "involuntary full rematerialization" of
    tensors. Each gradient is summed over the devices and only its shard kept (XLA:CPU
    compiles an all-reduce and a slice, seen in the compiled HLO; XLA:GPU has a pass that
    makes that pair one reduce-scatter, not checked here without a GPU); the optimizer
    update runs on the shards alone: the optimizer state is never gathered."""
    whole = NamedSharding(mesh, P())
    state = state.replace(params=jax.lax.with_sharding_constraint(state.params, whole))
    state, metrics = task.train_step(state, batch, None)
    n = mesh.devices.size
    state = jax.tree_util.tree_map(
        lambda a: jax.lax.with_sharding_constraint(
            a, NamedSharding(mesh, fsdp_spec(a.shape, n, min_size))
        ),
        state,
    )
    return state, jax.lax.with_sharding_constraint(metrics, whole)


@functools.cache
def _fsdp_train(mesh: Mesh, min_size: int) -> Any:
    """fsdp's jitted step, once per mesh (the task static, as for the other strategies).
    The state is donated off the CPU (see compiled_train_step): on an accelerator the
    update then needs no second copy of the shards."""
    donate = 1 if jax.default_backend() != "cpu" else ()
    return jax.jit(
        functools.partial(fsdp_train_step, mesh, min_size), static_argnums=0, donate_argnums=donate
    )


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**17 else f"{n / 2**10:.1f} KiB"


class FsdpStrategy(ShardedStrategy):
    """Fully sharded data parallel: the batch split over the `data` axis as under `sharded`,
    and each parameter, optimizer moment and `extra` array split over the same axis by
    `fsdp_spec` (ZeRO-3 style), so between steps each device holds ~1/N of the state. The
    task's step is unchanged (`axis=None`): XLA inserts the collectives (`fsdp_train_step`).
    Within a step the params are whole on every device (gathered once, kept for the
    backward pass: XLA does not re-gather per layer), so the saving is the optimizer state,
    the resting params and their update, not the step's peak of params + gradients.

    Same numbers as `single` for the same global batch (tests/test_fsdp.py). Checkpoints save
    the sharded state as it lies (`checkpoint_state`); they restore under any strategy and
    device count. One process only: see `__init__`.
    """

    name = "fsdp"

    def __init__(self, devices: list[Any], min_size: int = FSDP_MIN_SIZE) -> None:
        if jax.process_count() > 1:
            # Only process 0 saves (dlx/session.py, dlx/training/loop.py), but each process
            # holds only its own shards: saving them needs every process in Orbax's save
            # (or a gather all of them join), which the loop does not do yet.
            raise UserError(
                "parallel=fsdp runs in one process (its devices may be many); "
                f"this run has {jax.process_count()} processes",
                hint="use parallel=sharded for multi-process runs, or one process with "
                "parallel=fsdp",
            )
        super().__init__(devices)
        self.mesh = self.replicated.mesh
        self.min_size = min_size
        self.layout: dict[str, int] | None = None  # filled by `place`: what `describe` says
        self._fsdp = _fsdp_train(self.mesh, min_size)

    def shardings(self, state: Any) -> Any:
        """The NamedSharding of every array of `state` (any pytree) under the fsdp rule."""
        return jax.tree_util.tree_map(
            lambda a: NamedSharding(self.mesh, fsdp_spec(np.shape(a), self.n, self.min_size)),
            state,
        )

    def place(self, state: TrainState) -> TrainState:
        placed = jax.device_put(state, self.shardings(state))
        self.layout = fsdp_layout(placed)
        return placed

    def train_step(self, task: Any, state: TrainState, batch: Any) -> tuple[TrainState, dict]:
        return self._fsdp(task, state, batch)

    def checkpoint_state(self, state: TrainState) -> TrainState:
        """The sharded state itself: Orbax writes each device's shard, so a save never
        gathers the model onto one device (restoring reads it into any layout)."""
        return state

    def describe(self) -> str:
        text = f"fsdp (jit, params + optimizer state sharded) over {self.n} devices"
        if self.layout:
            lay = self.layout
            text += (
                f": {lay['sharded']} of {lay['arrays']} arrays sharded, "
                f"{_mib(lay['per_device_bytes'])} per device of {_mib(lay['total_bytes'])}"
            )
        return text


def fsdp_layout(state: Any) -> dict[str, int]:
    """What a placed state occupies: arrays, how many are split over more than one device,
    the bytes of one whole copy and the bytes the busiest device holds (read from the
    arrays' own shards, so it measures the layout rather than restating the rule)."""
    leaves = [x for x in jax.tree_util.tree_leaves(state) if isinstance(x, jax.Array)]
    per_device: dict[Any, int] = {}
    for x in leaves:
        for shard in x.addressable_shards:
            per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
    return {
        "arrays": len(leaves),
        "sharded": sum(not x.sharding.is_fully_replicated for x in leaves),
        "total_bytes": sum(x.nbytes for x in leaves),
        "per_device_bytes": max(per_device.values(), default=0),
    }


class PmapStrategy(Strategy):
    """jax.pmap over local devices: state replicated with a leading device axis."""

    name = "pmap"

    def __init__(self, devices: list[Any]) -> None:
        super().__init__(devices)
        self.local = [d for d in devices if d.process_index == jax.process_index()]
        # pmap takes arrays already laid out over these devices (or numpy), not ones
        # committed to a single device.
        self.layout = NamedSharding(Mesh(np.array(self.local), ("b",)), P("b"))
        # pmap's `devices` must be left unset across processes (it then uses all of them).
        devs = {"devices": self.local} if jax.process_count() == 1 else {}
        donate = (1,) if jax.default_backend() != "cpu" else ()  # see compiled_train_step
        self._train = jax.pmap(
            lambda task, state, batch: task.train_step(state, batch, "batch"),
            axis_name="batch",
            static_broadcasted_argnums=0,
            donate_argnums=donate,
            **devs,
        )
        self._eval = jax.pmap(
            lambda task, state, batch: task.eval_step(state, batch, "batch"),
            axis_name="batch",
            static_broadcasted_argnums=0,
            **devs,
        )

    def place(self, state: TrainState) -> TrainState:
        k = len(self.local)
        return jax.tree_util.tree_map(
            lambda a: jax.device_put(
                np.broadcast_to(np.asarray(a), (k, *np.shape(a))), self.layout
            ),
            state,
        )

    def local_batch(self, batch: dict) -> Any:
        k = len(self.local)
        return jax.tree_util.tree_map(lambda x: x.reshape(k, -1, *x.shape[1:]), batch)

    def train_step(self, task: Any, state: TrainState, batch: Any) -> tuple[TrainState, dict]:
        state, metrics = self._train(task, state, batch)
        return state, jax.tree_util.tree_map(lambda m: m[0], metrics)

    def eval_step(self, task: Any, state: TrainState, batch: Any) -> dict:
        return jax.tree_util.tree_map(lambda m: m[0], self._eval(task, state, batch))

    def unreplicate(self, state: TrainState) -> TrainState:
        return jax.tree_util.tree_map(lambda a: jnp.asarray(to_host(a[0])), state)

    def describe(self) -> str:
        return f"pmap over {len(self.local)} local devices"


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
    if name == "fsdp":
        return FsdpStrategy(devices)
    return ShardedStrategy(devices)
