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

from dlx.rundir import create_run_dir, run_meta, write_json
from dlx.training.loop import LoopIO, LoopState

# Exit codes of `dlx train` besides 0 (finished) and 2 (user error).
EXIT_DIVERGED = 3
EXIT_SIGNAL_BASE = 128  # preempted by signal N: 128 + N, as a shell reports it


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


def read_resume(run_dir: Path, state: Any, host: dict | None = None) -> tuple[Any, LoopState, dict]:
    """The latest checkpoint of `run_dir` over `state` (a template of the right shapes): the
    state, the loop's position (best params included) and the checkpoint's meta (with the
    host arrays under "host" when a `host` template is given)."""
    from dlx.checkpoint import RunCheckpoints
    from dlx.training.parallel import to_host

    ckpt = RunCheckpoints(run_dir / "checkpoints", create=False)
    try:
        state, meta = ckpt.restore(state, "latest", host=host)
        best_params = None
        if ckpt.steps("best"):
            best_params = to_host(ckpt.restore(state, "best")[0].params)
    finally:
        ckpt.close()
    return state, LoopState.from_meta(meta, best_params), meta


class RunSession:
    def __init__(
        self,
        setup: Any,
        state: Any,
        overrides: Sequence[str] = (),
        resume: Path | None = None,
        start: LoopState | None = None,
        summary: dict | None = None,
    ) -> None:
        """`state`: the model's first state (its parameter table is shown); `resume`: the run
        dir being continued and `start` where its checkpoint left off; `summary`: fields the
        kind of run adds to summary.json from the start."""
        import jax

        self.setup, self.cfg = setup, setup.cfg
        self.overrides, self.resume, self.start = list(overrides), resume, start
        self.main = jax.process_index() == 0
        self.rows = param_rows(state.params)
        self.t0 = time.time()
        self.run_dir: Path | None = None
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
            self.checkpoints = RunCheckpoints(run_dir / "checkpoints")

    def _header(self) -> None:
        data, n = self.setup.data, self.summary["param_count"]
        self.console.info(f"run dir: {self.run_dir}")
        if self.resume is not None and self.start is not None:
            self.console.info(f"resuming from step {self.start.step} (latest checkpoint)")
        self.console.info(
            f"data: {data.name} from {data.source}: train {len(data.x_train)}, "
            f"val {len(data.x_val)}, test {len(data.x_test)}"
        )
        self.console.info(f"task: {self.setup.task.name}; parallel: {self.summary['parallel']}")
        self.console.table(
            f"model {model_label(self.cfg.model)}: {n:,} parameters",
            [*self.rows, ("total", "", n)],
            ("parameter", "shape", "count"),
        )

    def _teardown(self) -> None:
        self.summary["wall_time_s"] = time.time() - self.t0
        if self._stop is not None:
            self._stop.__exit__(None, None, None)
        try:
            self._write_summary()
        finally:
            if self.checkpoints is not None:
                self.checkpoints.wait()
                self.checkpoints.close()
            if self.profiler is not None:
                self.profiler.close()
            if self.run_dir is not None:
                from dlx.track.plots import plot_run

                plot_run(self.run_dir)  # plots/*.png; a warning, never an error, if it fails
            self.metrics.close()
            if self._handler is not None:
                from dlx.track.console import log

                log.removeHandler(self._handler)
                self._handler.close()

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
        )

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
        if stop == "preempted":
            self.summary.update(
                status="preempted",
                signal=self.signum,
                exit_code=EXIT_SIGNAL_BASE + (self.signum or 0),
            )
            self.console.info(
                f"preempted at step {steps}: checkpoint saved. Resume with: "
                f"dlx train resume={self.run_dir}"
            )
        elif stop == "diverged":
            self.summary.update(
                status="diverged",
                diverged_step=fields.get("diverged_step"),
                exit_code=EXIT_DIVERGED,
            )
            self.console.info(
                f"diverged: non-finite loss at step {fields.get('diverged_step')}; the last "
                f"good checkpoint is kept in {self.run_dir}/checkpoints"
            )
        else:
            self.summary.update(status="finished", early_stopped=stop == "early_stopped")
        self.summary["wall_time_s"] = time.time() - self.t0
        self.console.info(
            f"{self.summary['status']} in {self.summary['wall_time_s']:.1f}s: {self.run_dir}"
        )

    @property
    def finished(self) -> bool:
        return self.summary["status"] == "finished"

    def _write_summary(self) -> None:
        if self.run_dir is not None:
            write_json(self.run_dir / "summary.json", self.summary)


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
