"""One run session: the life of a run dir, the same for every kind of training.

    with RunSession(setup, state, overrides, resume=...) as session:
        ...train, calling session.update(...) / session.end(...)

On entry it creates the run dir (or takes over the one being resumed), writes config.yaml,
overrides.yaml and meta.json, attaches train.log, opens the metric loggers and checkpoints,
prints the run's header and writes a live summary.json ("running"). On exit, whatever
happened, it writes the final summary (status, exit code, wall time; "failed" with the error
on an exception), waits for checkpoint writes, stops the profiler, draws the plots, closes
the loggers and detaches the log. Only process 0 writes; the others get a session with no
run dir and loggers that drop everything.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from dlx.errors import UserError
from dlx.rundir import create_run_dir, run_meta, write_json
from dlx.training.loop import LoopIO, LoopState

# Exit codes of `dlx train` besides 0 (finished) and 2 (user error).
EXIT_DIVERGED = 3
EXIT_SIGNAL_BASE = 128  # preempted by signal N: 128 + N, as a shell reports it
MIN_FREE = 2**20  # bytes outputs.dir must have free to start a run
PROGRESS_S = 10.0  # how often a training run's summary.json shows its progress


class _NullMetrics:
    """Stands in for the metric loggers on processes other than 0 (only process 0 writes)."""

    def write(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


def param_rows(params: Any) -> list[tuple[str, str, int]]:
    """(layer path, shape, count) per parameter array, for the table shown at start."""
    import jax

    rows = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        rows.append((name, "x".join(map(str, leaf.shape)), int(leaf.size)))
    return rows


def model_label(model_cfg: Any) -> str:
    """What to call the model: its name, or the class a `_target_` names."""
    return str(model_cfg.get("name") or model_cfg.get("_target_") or "?")


def check_session(cfg: Any) -> None:
    """Settings the session itself uses, checked before anything is written."""
    from dlx.track.loggers import check_loggers
    from dlx.track.profile import check_profile

    check_loggers(list(cfg.logger))
    check_profile(cfg.trainer)
    check_outputs(Path(cfg.outputs.dir))


def check_outputs(root: Path) -> None:
    """outputs.dir can take a run dir: its nearest existing folder is a writable folder with
    some space left (before anything is compiled or written)."""
    import shutil

    existing = root.expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    else:
        try:  # read-only mounts: root passes os.access there, a real write does not
            probe = existing / f".dlx-write-test-{os.getpid()}"
            probe.mkdir()
            probe.rmdir()
        except OSError as err:
            problem = f"cannot write in {existing}: {err.strerror}"
    if problem is None and shutil.disk_usage(existing).free < MIN_FREE:
        problem = f"the disk of {existing} is full ({shutil.disk_usage(existing).free} bytes free)"
    if problem:
        raise UserError(
            f"outputs.dir={root}: {problem}",
            hint="point outputs.dir at a writable folder with free space, e.g. "
            "outputs.dir=/tmp/dlx-outputs",
        )


def read_resume(run_dir: Path, state: Any, host: dict | None = None) -> tuple[Any, LoopState, dict]:
    """The latest checkpoint of `run_dir` over `state` (a template of the right shapes): the
    state, the loop's position (best params included) and the checkpoint's meta (with the
    host arrays under "host" when a `host` template is given)."""
    from dlx.checkpoint import RunCheckpoints

    ckpt = RunCheckpoints(run_dir / "checkpoints", create=False)
    try:
        state, meta = ckpt.restore(state, "latest", host=host)
        start = LoopState.from_meta(meta, None)
        start.best, start.best_weights, start.best_unsaved = _resume_best(ckpt, state, start)
    finally:
        ckpt.close()
    return state, start, meta


def _resume_best(ckpt: Any, state: Any, start: LoopState) -> tuple[dict, Any, bool]:
    """The best record and params, always from one and the same checkpoint, so that a run
    killed between its `latest` and `best` commits (or with a corrupt `best`) resumes with a
    best whose weights, step and value agree: (best, its weights, needs saving as `best`)."""
    import logging

    from dlx.errors import UserError
    from dlx.training.parallel import to_host
    from dlx.training.step import weights

    log = logging.getLogger("dlx")
    step = start.best.get("step")
    if step is not None and step in ckpt.steps("best"):
        try:
            return start.best, to_host(weights(ckpt.restore(state, "best", step)[0])), False
        except UserError as err:
            log.warning("%s", err)
    if step is not None and step == start.step:  # latest is that very step: same weights
        return start.best, to_host(weights(state)), True
    for other in sorted(ckpt.steps("best"), reverse=True):  # an older best, with its own meta
        try:
            best_state, meta = ckpt.restore(state, "best", other)
        except UserError as err:
            log.warning("%s", err)
            continue
        if meta.get("best"):
            log.warning(
                "best checkpoint of step %s is missing; using the one of step %s", step, other
            )
            return dict(meta["best"]), to_host(weights(best_state)), False
    if step is not None:
        log.warning(
            "no readable best checkpoint (step %s): the best is chosen again from the next eval",
            step,
        )
    return {}, None, False


class RunSession:
    def __init__(
        self,
        setup: Any,
        state: Any,
        overrides: Sequence[str] = (),
        resume: Path | None = None,
        start: LoopState | None = None,
        summary: dict | None = None,
        lock: Any = None,
    ) -> None:
        """`state`: the model's first state (its parameter table is shown); `resume`: the run
        dir being continued and `start` where its checkpoint left off; `summary`: fields the
        kind of run adds to summary.json from the start; `lock`: the RunLock the caller took
        on `resume` (a new run dir is locked here, as it is made)."""
        import jax

        self.setup, self.cfg = setup, setup.cfg
        self.overrides, self.resume, self.start = list(overrides), resume, start
        self.main = jax.process_index() == 0
        self.rows = param_rows(state.params)
        self.t0 = time.time()
        self.run_dir: Path | None = None
        self.lock = lock
        self._progress_t = 0.0
        self.metrics: Any = _NullMetrics()
        self.checkpoints: Any = None
        self.profiler: Any = None
        self._handler: Any = None
        self._stop: Any = None
        from dlx.track.console import RunConsole

        self.console = RunConsole(self.cfg.trainer.progress if self.main else "none")
        self.summary: dict[str, Any] = {
            "status": "running",
            "recipe": self.cfg.recipe,
            "run_dir": None,
            "task": setup.task.name,
            "param_count": sum(r[2] for r in self.rows),
            "parallel": setup.strategy.describe(),
            "processes": jax.process_count(),
            "pid": os.getpid(),
            "host": platform.node(),
            **(summary or {}),
        }

    # ---- entry and exit ----------------------------------------------------------------

    def __enter__(self) -> RunSession:
        from dlx.training.signals import StopRequest

        try:
            if self.main:
                self._open_run_dir()
            from dlx.track.profile import make_profiler

            self.profiler = make_profiler(self.cfg.trainer, self.run_dir)
            self.summary["run_dir"] = str(self.run_dir)
            self._write_summary()
            self._stop = StopRequest().__enter__()
            self._header()
        except BaseException:
            self._teardown()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.summary.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        self._teardown()

    def _open_run_dir(self) -> None:
        import jax

        from dlx.checkpoint import RunCheckpoints
        from dlx.track.console import attach_log_file
        from dlx.track.loggers import make_logger

        cfg, command = self.cfg, ["dlx", "train", *self.overrides]
        if self.resume is None:
            run_dir = create_run_dir(Path(cfg.outputs.dir), cfg.recipe)
            from dlx.runlock import RunLock

            self.lock = RunLock(run_dir).acquire()
            OmegaConf.save(cfg, run_dir / "config.yaml")
            (run_dir / "overrides.yaml").write_text(
                OmegaConf.to_yaml(OmegaConf.create(self.overrides))
            )
            meta = run_meta(jax.devices(), command)
        else:
            run_dir = self.resume
            _keep_metrics_up_to(run_dir / "metrics.jsonl", self.start.step if self.start else 0)
            meta = json.loads((run_dir / "meta.json").read_text())
            meta.setdefault("resumes", []).append(
                {
                    "from_step": self.start.step if self.start else 0,
                    "command": command,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }
            )
        self.run_dir = run_dir
        write_json(run_dir / "meta.json", meta)
        self._handler = attach_log_file(run_dir / "train.log")
        resume_step = self.start.step if self.resume is not None and self.start else None
        self.metrics = make_logger(list(cfg.logger), run_dir, cfg, resume_step=resume_step)
        if cfg.trainer.checkpoint:
            keep = int(cfg.trainer.get("keep_checkpoints", 2))
            self.checkpoints = RunCheckpoints(run_dir / "checkpoints", keep=keep)

    def _header(self) -> None:
        data, n = self.setup.data, self.summary["param_count"]
        if self.run_dir is not None:
            from dlx.track.plots import prepare_plots

            prepare_plots()  # matplotlib's import, in a helper process, while the run trains
        self.console.info(f"run dir: {self.run_dir}")
        if self.resume is not None and self.start is not None:
            self.console.info(f"resuming from step {self.start.step} (latest checkpoint)")
        self.console.info(
            f"data: {data.name} from {data.source}: train {len(data.x_train)}, "
            f"val {len(data.x_val)}, test {len(data.x_test)}"
        )
        self.console.info(f"task: {self.setup.task.name}; parallel: {self.summary['parallel']}")
        title = f"model {model_label(self.cfg.model)}: {n:,} parameters"
        self.console.table(
            title,
            [*self.rows, ("total", "", n)],
            ("parameter", "shape", "count"),
            plain=f"{title} in {len(self.rows)} arrays (table in train.log)",
        )

    def _teardown(self) -> None:
        self.summary["wall_time_s"] = time.time() - self.t0
        try:
            self._write_summary()
            self._close_outputs()
        finally:
            # The handlers stay until the plots are drawn: a SIGTERM during the final test
            # eval, a checkpoint wait or the plots preempts the run as one in the loop does.
            if self._stop is not None:
                self._stop.__exit__(None, None, None)
            if self.signum is not None and self.summary["status"] in ("running", "finished"):
                self._preempted(self.summary.get("steps", 0))
                self._write_summary()
            self.metrics.close()
            if self._handler is not None:
                from dlx.track.console import log

                log.removeHandler(self._handler)
                self._handler.close()
            if self.lock is not None:
                self.lock.release()

    def _close_outputs(self) -> None:
        """Wait for checkpoint writes, stop the profiler, draw the plots."""
        if self.checkpoints is not None:
            self.checkpoints.wait()
            self.checkpoints.close()
        if self.profiler is not None:
            self.profiler.close()
        if self.run_dir is not None:
            from dlx.track.plots import draw_run

            # plots/*.png, by the helper `_header` started; a failure is a warning and
            # summary.json's `plots.error`, never a failed run.
            self.summary["plots"] = draw_run(self.run_dir)
            self._write_summary()

    # ---- during the run ------------------------------------------------------------------

    @property
    def io(self) -> LoopIO:
        """What the training loop reports to."""
        return LoopIO(
            console=self.console,
            metrics=self.metrics,
            checkpoints=self.checkpoints,
            should_stop=self._stop,
            profiler=self.profiler,
            progress=self.progress,
        )

    def progress(self, force: bool = False, **fields: Any) -> None:
        """The loop's live position (steps, epochs, last checkpoint) in summary.json, written
        at most every PROGRESS_S seconds unless `force`d (after each checkpoint), so that
        `dlx runs` tells how far a run got, even one killed with -9."""
        self.summary.update(fields)
        now = time.time()
        if force or now - self._progress_t >= PROGRESS_S:
            self._progress_t = now
            self._write_summary()

    @property
    def signum(self) -> int | None:
        return self._stop.signum if self._stop is not None else None

    def update(self, **fields: Any) -> None:
        """Add fields to summary.json and write it now (a live view for `dlx runs`)."""
        self.summary.update(fields)
        self._write_summary()

    def end(self, stop: str | None, steps: int, **fields: Any) -> None:
        """Record how the training part ended: `stop` is the loop's reason (None: it ran
        to the end; preempted; diverged; early_stopped). Sets status and exit code."""
        self.summary.update(fields)
        if stop == "preempted" or (stop != "diverged" and self.signum is not None):
            self._preempted(steps)  # a signal during the test eval stops the run too
        elif stop == "diverged":
            self.summary.update(
                status="diverged",
                diverged_step=fields.get("diverged_step"),
                exit_code=EXIT_DIVERGED,
            )
            self.console.info(f"diverged: {self._divergence_note(fields)}")
        else:
            self.summary.update(status="finished", early_stopped=stop == "early_stopped")
        self.summary["wall_time_s"] = time.time() - self.t0
        self.console.info(
            f"{self.summary['status']} in {self.summary['wall_time_s']:.1f}s: {self.run_dir}"
        )

    def _preempted(self, steps: int) -> None:
        self.summary.update(
            status="preempted", signal=self.signum, exit_code=EXIT_SIGNAL_BASE + (self.signum or 0)
        )
        self.console.info(
            f"preempted at step {steps}: checkpoint saved. Resume with: "
            f"dlx train resume={self.run_dir}"
        )

    def _divergence_note(self, fields: dict) -> str:
        """What was not finite, and which checkpoint (if any) a user can go back to."""
        reason = (
            fields.get("diverged_reason")
            or f"non-finite loss at step {fields.get('diverged_step')}"
        )
        if self.checkpoints is None:
            return f"{reason}; no checkpoints are kept (trainer.checkpoint=false)"
        self.checkpoints.wait()  # an async save of the last good step may still be in flight
        steps = self.checkpoints.steps("latest")
        if not steps:
            return f"{reason}; it diverged before the first checkpoint, so none was saved"
        return (
            f"{reason}; the last good checkpoint (step {max(steps)}) is kept in "
            f"{self.run_dir}/checkpoints"
        )

    @property
    def finished(self) -> bool:
        return self.summary["status"] == "finished"

    def _write_summary(self) -> None:
        if self.run_dir is not None:
            self.summary["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            try:
                write_json(self.run_dir / "summary.json", self.summary)
            except OSError as err:  # a full disk: the run's real error is reported instead
                from dlx.track.console import log

                log.warning("could not write summary.json: %s", err)


def _keep_metrics_up_to(path: Path, step: int) -> None:
    """Drop records logged after the checkpoint we resume from: they will be redone."""
    if not path.exists():
        return
    from dlx.io import atomic_write

    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= step
    ]
    atomic_write(path, "".join(f"{line}\n" for line in kept))
