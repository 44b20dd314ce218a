"""Orbax checkpoints of a run: `checkpoints/latest` (most recent) and `checkpoints/best`.

Only arrays and JSON are written and read back (Orbax's standard and JSON handlers): loading
a checkpoint never runs code.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from dlx.errors import UserError, first_line

log = logging.getLogger("dlx")

KINDS = ("latest", "best")


class DiskFullError(UserError):
    """A checkpoint write ran out of space. The process exits at once after the message:
    Orbax's background writers would otherwise print hundreds of lines while Python shuts
    down around them."""

    hard_exit = True


def _disk_full(err: BaseException) -> bool:
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e)
        if "No space left on device" in text or "os_error_code='28'" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def _writing(directory: Path) -> Any:
    """A checkpoint write (or the wait for the background ones): disk full becomes one
    message naming the folder, the free space and what to do."""
    try:
        yield
    except Exception as err:
        if not _disk_full(err):
            raise
        import shutil

        free = shutil.disk_usage(directory).free / 2**20 if directory.exists() else 0.0
        raise DiskFullError(
            f"no space left on the device writing checkpoints to {directory} ({free:.1f} MiB free)",
            hint="free some space (or move outputs.dir to a larger disk), then continue from the "
            f"last complete checkpoint: dlx train resume={directory.parent}",
        ) from err


def _pytree(state: Any) -> dict:
    """The saved part of a TrainState: data only (apply_fn and tx are code)."""
    if jax.process_count() > 1:  # orbax refuses host-local jax.Arrays across processes
        state = jax.tree_util.tree_map(np.asarray, state)
    tree = {
        "step": state.step,
        "params": state.params,
        "opt_state": state.opt_state,
        "rng": state.rng,
    }
    if jax.tree_util.tree_leaves(state.extra):  # only tasks that carry some (EWC)
        tree["extra"] = state.extra
    if jax.tree_util.tree_leaves(state.model_state):  # only models with some (BatchNorm)
        tree["model_state"] = state.model_state
    return tree


def _restore_target(tree: Any) -> Any:
    """What to read `tree`'s arrays back as: its shapes and dtypes, laid out as its arrays are
    (a placed state: one device, or fsdp's shards), else on this process's first device.

    Never "as saved": an fsdp checkpoint records its writer's mesh (8 devices, say), and
    Orbax refuses to recreate that layout on another device count ("Topology mismatch"). A
    shapes-only template (`Setup.template_state`, what `dlx.restore.load_run` restores into)
    has no layout of its own, so it gets one device."""
    one_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def target(x: Any) -> Any:
        s = ocp.utils.to_shape_dtype_struct(x)
        if isinstance(s, jax.ShapeDtypeStruct) and s.sharding is None:
            return jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=one_device)
        return s

    return jax.tree_util.tree_map(target, tree)


class RunCheckpoints:
    """Save/restore a run's latest and best checkpoints."""

    def __init__(self, directory: Path, create: bool = True, keep: int = 2) -> None:
        self.directory = Path(directory)
        # Orbax logs every unreadable file and every failed background write (with tracebacks)
        # at ERROR through absl before raising; dlx reports the exception once, as a UserError.
        logging.getLogger("absl").setLevel(logging.CRITICAL)
        # Only process 0 writes (and holds a plain, unreplicated copy of the state), so the
        # manager must not wait for the other processes at its barriers.
        multi = (
            ocp.options.MultiprocessingOptions(
                primary_host=jax.process_index(), active_processes={jax.process_index()}
            )
            if jax.process_count() > 1
            else ocp.options.MultiprocessingOptions()
        )
        self._saved: set[tuple[str, int]] = set()  # (kind, step) written by this process
        if create:  # orbax refuses create=True with active_processes: make the dirs here
            for kind in KINDS:
                (self.directory / kind).mkdir(parents=True, exist_ok=True)
        # latest keeps `keep` steps (trainer.keep_checkpoints; two by default, so a checkpoint
        # corrupted on disk still leaves a good one). Saves are asynchronous (Orbax's
        # default): `save` returns once the arrays are copied off the device, and the write
        # runs in a background thread while training goes on (`wait` joins it).
        self._managers = {
            k: ocp.CheckpointManager(
                self.directory / k,
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=max(1, keep) if k == "latest" else 1,
                    create=False,
                    multiprocessing_options=multi,
                ),
                # Declared up front so metadata (shapes) can be read without restoring.
                item_handlers={
                    "state": ocp.StandardCheckpointHandler(),
                    "meta": ocp.JsonCheckpointHandler(),
                    "host": ocp.StandardCheckpointHandler(),
                },
            )
            for k in KINDS
        }

    def save(
        self,
        state: Any,
        meta: dict,
        kinds: tuple[str, ...] = ("latest",),
        host: dict | None = None,
    ) -> None:
        """Save `state` and its JSON `meta`; `host` is a dict of numpy arrays a run keeps
        outside the TrainState (a continual run's replay buffer), restored with `restore`."""
        step = int(jax.device_get(state.step))
        tree = _pytree(state)
        self._check_space(tree, host, kinds)
        items = {"state": ocp.args.StandardSave(tree), "meta": ocp.args.JsonSave(meta)}
        if host:
            items["host"] = ocp.args.StandardSave(host)
        for kind in kinds:
            manager = self._managers[kind]
            if step in manager.all_steps():
                if (kind, step) in self._saved:
                    continue  # e.g. preempted right after an eval saved this very step
                # Left by an earlier process: a resume came back to this step, so that copy
                # is the corrupt one it fell back over (or the same values): write it anew.
                manager.wait_until_finished()
                manager.delete(step)
            with _writing(self.directory):
                manager.save(step, args=ocp.args.Composite(**items))
            self._saved.add((kind, step))

    def _check_space(self, tree: Any, host: dict | None, kinds: tuple[str, ...]) -> None:
        """Refuse a save the disk cannot hold, before Orbax starts it: a write that runs out
        of space mid-way fails in Orbax's background threads, which print pages of
        tracebacks. Room for these copies plus one still being written is asked for."""
        import shutil

        leaves = jax.tree_util.tree_leaves((tree, host))
        need = sum(int(np.prod(np.shape(x))) * np.dtype(x.dtype).itemsize for x in leaves)
        need = need * (len(kinds) + 1) + 2**20
        free = shutil.disk_usage(self.directory).free
        if free < need:
            raise DiskFullError(
                f"not enough space to write checkpoints to {self.directory}: "
                f"{free / 2**20:.1f} MiB free, a save needs about {need / 2**20:.1f} MiB",
                hint="free some space (or move outputs.dir to a larger disk), then continue "
                f"from the last complete checkpoint: dlx train resume={self.directory.parent}",
            )

    def steps(self, kind: str = "latest") -> list[int]:
        return list(self._managers[kind].all_steps())

    def restore(
        self, state: Any, kind: str = "best", step: int | None = None, host: dict | None = None
    ) -> tuple[Any, dict]:
        """`state` (a TrainState with the right shapes) with the saved values, and the meta;
        with `host` (a template of the host arrays saved), the meta carries them as
        `meta["host"]`.

        Without `step`, the newest readable checkpoint: a corrupt or half-written one is
        reported and the previous good step is used where one exists.
        """
        manager = self._managers[kind]
        steps = sorted(manager.all_steps(), reverse=True) if step is None else [step]
        if not steps:
            raise UserError(
                f"no {kind} checkpoint in {self.directory / kind}",
                hint="the run saved none yet (checkpoints are written after each "
                "eval and on preemption)",
            )
        errors = []
        for s in steps:
            try:
                return self._restore_step(state, kind, s, host)
            except UserError as err:
                errors.append(str(err))
                if s != steps[-1]:
                    log.warning("%s; falling back to an earlier step", err)
        raise UserError(
            "; ".join(errors),
            hint="the checkpoint is corrupt or truncated, or from a different model",
        )

    def _restore_step(
        self, state: Any, kind: str, step: int, host: dict | None = None
    ) -> tuple[Any, dict]:
        path = self.directory / kind / str(step)
        self.check_shapes(state.params, kind, step)
        shapes = functools.partial(jax.tree_util.tree_map, ocp.utils.to_shape_dtype_struct)
        items = {
            "state": ocp.args.StandardRestore(_restore_target(_pytree(state))),
            "meta": ocp.args.JsonRestore(),
        }
        if host:
            items["host"] = ocp.args.StandardRestore(shapes(host))
        try:
            restored = self._managers[kind].restore(step, args=ocp.args.Composite(**items))
        except UserError:
            raise
        except Exception as err:  # orbax raises many types for unreadable data
            raise UserError(f"cannot read checkpoint {path}: {first_line(err)[:300]}") from err
        meta = dict(restored["meta"] or {})
        if host:
            meta["host"] = dict(restored["host"])
        return state.replace(**restored["state"]), meta

    def saved_param_shapes(self, kind: str, step: int) -> dict[str, tuple[int, ...]]:
        """Parameter path -> shape as saved, read from the checkpoint's metadata only."""
        path = self.directory / kind / str(step)
        try:
            meta = self._managers[kind].item_metadata(step)["state"]["params"]
        except Exception as err:
            raise UserError(
                f"cannot read checkpoint {path}: metadata unreadable ({type(err).__name__})"
            ) from err
        flat = jax.tree_util.tree_flatten_with_path(meta)[0]
        return {jax.tree_util.keystr(p): tuple(m.shape) for p, m in flat}

    def check_shapes(self, params: Any, kind: str, step: int) -> None:
        """A clear error naming the parameter when the model differs from the checkpoint's."""
        ours = {
            jax.tree_util.keystr(p): tuple(np.shape(v))
            for p, v in jax.tree_util.tree_flatten_with_path(params)[0]
        }
        compare_shapes(
            self.saved_param_shapes(kind, step),
            ours,
            f"checkpoint {self.directory / kind / str(step)}",
            "use the same model settings as the run that saved it",
        )

    def latest_step(self, kind: str = "latest") -> int | None:
        return self._managers[kind].latest_step()

    def wait(self) -> None:
        with _writing(self.directory):
            for m in self._managers.values():
                m.wait_until_finished()

    def close(self) -> None:
        for m in self._managers.values():
            m.close()


def compare_shapes(saved: dict, ours: dict, where: str, hint: str) -> None:
    """Parameter path -> shape maps of saved params and this model's: a UserError naming the
    first parameter that is missing on one side or shaped differently."""
    for name in sorted(set(saved) | set(ours)):
        if saved.get(name) != ours.get(name):
            raise UserError(
                f"parameter {name}: {where} has shape {saved.get(name, 'none (missing)')}, "
                f"this model has {ours.get(name, 'none (missing)')}",
                hint=hint,
            )
