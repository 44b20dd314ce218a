"""`trainer.profile=true`: a jax.profiler trace of a few training steps into <run dir>/profile.

The trace holds an XPlane file (TensorBoard's profile plugin: `tensorboard --logdir
<run dir>/profile`) and a Perfetto trace (`perfetto_trace.json.gz`, open it at
ui.perfetto.dev). Steps after compilation are what is worth seeing, hence the default 10..15.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dlx.errors import UserError


class StepProfiler:
    """Call `on_step(step, sync)` before dispatching each step (1-based global step number):
    the trace starts before step `first` and stops before step `last + 1`, after waiting for
    `sync` (e.g. the train state) so the traced steps have finished on the device.
    `close()` stops a trace still running (training ended before `last`)."""

    def __init__(self, trace_dir: Path, first: int, last: int) -> None:
        if not 1 <= first <= last:
            raise ValueError(f"profile steps must be 1 <= first <= last, got {first}, {last}")
        self.trace_dir, self.first, self.last = Path(trace_dir), first, last
        self.active = False
        self.done = False

    def on_step(self, step: int, sync: Any = None) -> None:
        if self.done:
            return
        if not self.active and self.first <= step <= self.last:
            import jax

            jax.block_until_ready(sync)  # earlier steps stay out of the trace
            self.trace_dir.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.trace_dir), create_perfetto_trace=True)
            self.active = True
        elif self.active and step > self.last:
            self._stop(sync)

    def close(self, sync: Any = None) -> None:
        if self.active:
            self._stop(sync)

    def _stop(self, sync: Any) -> None:
        import jax

        try:
            jax.block_until_ready(sync)
        finally:
            jax.profiler.stop_trace()
            self.active, self.done = False, True

    def trace_files(self) -> list[Path]:
        return sorted(p for p in self.trace_dir.rglob("*") if p.is_file())


class NullProfiler:
    """trainer.profile=false, or a process other than 0."""

    def on_step(self, step: int, sync: Any = None) -> None:
        pass

    def close(self, sync: Any = None) -> None:
        pass


def profile_steps(trainer_cfg: Any) -> tuple[int, int]:
    """(first, last) from trainer.profile_steps; a UserError when malformed."""
    steps: Sequence[int] = list(trainer_cfg.get("profile_steps") or [10, 15])
    if len(steps) == 1:
        steps = [steps[0], steps[0]]
    first, last = (int(s) for s in steps) if len(steps) == 2 else (0, -1)
    if not 1 <= first <= last:
        raise UserError(
            f"trainer.profile_steps must be [first, last] with 1 <= first <= last, got {steps}",
            hint="e.g. trainer.profile_steps=[10,15]",
        )
    return first, last


def check_profile(trainer_cfg: Any) -> None:
    """Fail before the run starts on a malformed trainer.profile_steps (when profiling)."""
    if trainer_cfg.get("profile", False):
        profile_steps(trainer_cfg)


def make_profiler(trainer_cfg: Any, run_dir: Path | None) -> StepProfiler | NullProfiler:
    """A StepProfiler when `trainer.profile` is on and this process writes (run_dir given)."""
    if not trainer_cfg.get("profile", False) or run_dir is None:
        return NullProfiler()
    return StepProfiler(Path(run_dir) / "profile", *profile_steps(trainer_cfg))
