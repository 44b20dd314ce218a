"""Orbax checkpoints of a run: `checkpoints/latest` (most recent) and `checkpoints/best`.

Only arrays and JSON are written and read back (Orbax's standard and JSON handlers): loading
a checkpoint never runs code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from dlx.errors import UserError

KINDS = ("latest", "best")


def _pytree(state: Any) -> dict:
    """The saved part of a TrainState: data only (apply_fn and tx are code)."""
    if jax.process_count() > 1:  # orbax refuses host-local jax.Arrays across processes
        state = jax.tree_util.tree_map(np.asarray, state)
    return {
        "step": state.step,
        "params": state.params,
        "opt_state": state.opt_state,
        "rng": state.rng,
    }


class RunCheckpoints:
    """Save/restore a run's latest and best checkpoints."""

    def __init__(self, directory: Path, create: bool = True) -> None:
        self.directory = Path(directory)
        # Only process 0 writes (and holds a plain, unreplicated copy of the state), so the
        # manager must not wait for the other processes at its barriers.
        multi = (
            ocp.options.MultiprocessingOptions(
                primary_host=jax.process_index(), active_processes={jax.process_index()}
            )
            if jax.process_count() > 1
            else ocp.options.MultiprocessingOptions()
        )
        if create:  # orbax refuses create=True with active_processes: make the dirs here
            for kind in KINDS:
                (self.directory / kind).mkdir(parents=True, exist_ok=True)
        opts = ocp.CheckpointManagerOptions(
            max_to_keep=1, create=False, multiprocessing_options=multi
        )
        self._managers = {k: ocp.CheckpointManager(self.directory / k, options=opts) for k in KINDS}

    def save(self, state: Any, meta: dict, kinds: tuple[str, ...] = ("latest",)) -> None:
        step = int(jax.device_get(state.step))
        for kind in kinds:
            self._managers[kind].save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(_pytree(state)), meta=ocp.args.JsonSave(meta)
                ),
            )

    def steps(self, kind: str = "latest") -> list[int]:
        return list(self._managers[kind].all_steps())

    def restore(self, state: Any, kind: str = "best", step: int | None = None) -> tuple[Any, dict]:
        """`state` (a TrainState with the right shapes) with the saved values, and the meta."""
        manager = self._managers[kind]
        step = manager.latest_step() if step is None else step
        if step is None:
            raise UserError(f"no {kind} checkpoint in {self.directory / kind}")
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _pytree(state))
        try:
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
        except Exception as err:  # orbax raises many types for unreadable data
            raise UserError(
                f"cannot restore checkpoint {self.directory / kind / str(step)}: "
                f"{str(err).splitlines()[0][:300]}",
                hint="the checkpoint is corrupt or from an incompatible model",
            ) from err
        tree = restored["state"]
        return state.replace(**tree), dict(restored["meta"])

    def wait(self) -> None:
        for m in self._managers.values():
            m.wait_until_finished()

    def close(self) -> None:
        for m in self._managers.values():
            m.close()
