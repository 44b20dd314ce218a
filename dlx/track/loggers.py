"""Metric loggers, selected together with `logger=[jsonl,tensorboard,mlflow,wandb]`.

metrics.jsonl is always written (plots, sweeps and tests read it). TensorBoard event files go
into the run dir itself, so `tensorboard --logdir outputs/` lists every run; they are written
by tensorboardX (no TensorFlow). MLflow is an optional extra (`pip install 'dlx[mlflow]'`)
logging to local files: the store `outputs/mlflow.db` (SQLite: MLflow 3 refuses its old
`file:` store unless MLFLOW_ALLOW_FILE_STORE=true) and artifacts in `outputs/mlartifacts`,
unless `logger.mlflow.tracking_uri` says otherwise. W&B (`dlx[wandb]`) runs offline into the
run dir by default: dlx/track/wandb_logger.py. Only process 0 creates a logger.

Every logger has the MetricsWriter interface: `write(record)` and `close()`. Records are
flat dicts with `step`, `epoch` and `split/metric` keys; scalar loggers skip values that are
not numbers (e.g. `checkpoint: "best (step 40)"`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dlx.errors import UserError, suggest
from dlx.track.metrics import MetricsWriter, scalars

LOGGERS = ("jsonl", "tensorboard", "mlflow", "wandb")


def check_loggers(names: Sequence[str]) -> None:
    """Fail before the run starts on an unknown logger or a missing optional package."""
    for name in names:
        if name not in LOGGERS:
            raise UserError(
                f"unknown logger '{name}'.{suggest(name, LOGGERS)}",
                hint=f"loggers: {', '.join(LOGGERS)}; e.g. logger=[jsonl,tensorboard]",
            )
    if "tensorboard" in names:
        _require("tensorboardX", "tensorboard", "tensorboardX")
    if "mlflow" in names:
        _require("mlflow", "mlflow", "'dlx[mlflow]'")
    if "wandb" in names:
        _require("wandb", "wandb", "'dlx[wandb]'")


def _require(module: str, logger: str, package: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(
            f"logger={logger} needs the Python package '{module}', which is not installed",
            hint=f"pip install {package}, or drop it: logger=[jsonl]",
        )


class TensorBoardLogger:
    """Scalars (tag = metric key, x = global step) plus the config as text, via tensorboardX."""

    def __init__(
        self,
        run_dir: Path,
        flush_secs: int = 10,
        batch_size: int | None = None,
        resume_step: int | None = None,
    ) -> None:
        from tensorboardX import SummaryWriter

        self.batch_size = batch_size
        # On resume, TensorBoard drops the earlier files' points after the resumed step (they
        # are logged again), so each curve stays a function of the step.
        purge = resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(logdir=str(run_dir), flush_secs=flush_secs, purge_step=purge)

    def add_config(self, config_yaml: str) -> None:
        # Indented four spaces: TensorBoard renders text as Markdown, this keeps it verbatim.
        body = "\n".join("    " + line for line in config_yaml.splitlines())
        self.writer.add_text("config", body, global_step=0)

    def write(self, record: Mapping[str, Any]) -> None:
        step = int(record.get("step", 0))
        for tag, value in scalars(record, self.batch_size):
            self.writer.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        self.writer.close()


class MLflowLogger:
    """One MLflow run per dlx run (named after the run dir) in experiment `recipe`: the flat
    config as params, scalars as metrics; at close, summary.json and plots/ as artifacts and
    the run marked FINISHED, KILLED (preempted) or FAILED from summary.json. Its id is kept
    in the run dir's mlflow.json, so a resumed run logs on into the same MLflow run."""

    def __init__(
        self,
        run_dir: Path,
        tracking_uri: str,
        experiment: str,
        params: Mapping[str, Any],
        batch_size: int | None = None,
        artifact_location: str | None = None,
    ) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.run_dir, self.batch_size = run_dir, batch_size
        self.client = MlflowClient(tracking_uri=tracking_uri)
        link = run_dir / "mlflow.json"
        if link.is_file():  # a resumed run
            saved = json.loads(link.read_text())
            if saved.get("tracking_uri") == tracking_uri:
                self.run_id = saved["run_id"]
                self.client.update_run(self.run_id, status="RUNNING")
                return
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            exp_id = self.client.create_experiment(experiment, artifact_location=artifact_location)
        else:
            exp_id = exp.experiment_id
        run = self.client.create_run(
            exp_id, run_name=run_dir.name, tags={"dlx.run_dir": str(run_dir)}
        )
        self.run_id = run.info.run_id
        link.write_text(json.dumps({"tracking_uri": tracking_uri, "run_id": self.run_id}) + "\n")
        items = [Param(k, str(v)[:500]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # log_batch takes at most 100 params
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def write(self, record: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        step, now = int(record.get("step", 0)), int(time.time() * 1000)
        metrics = [
            Metric(k, v, now, step) for k, v in scalars(record, self.batch_size) if math.isfinite(v)
        ]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        status = "FINISHED"
        summary = self.run_dir / "summary.json"
        if summary.is_file():
            self.client.log_artifact(self.run_id, str(summary))
            ended = json.loads(summary.read_text()).get("status")
            # preempted runs are resumable: KILLED, not FAILED (diverged, failed)
            status = {"finished": "FINISHED", "preempted": "KILLED"}.get(ended, "FAILED")
        if (self.run_dir / "plots").is_dir():
            self.client.log_artifacts(self.run_id, str(self.run_dir / "plots"), "plots")
        self.client.set_terminated(self.run_id, status)


class RunLogger:
    """Fans every record out to the selected loggers; metrics.jsonl first, always."""

    def __init__(self, loggers: Sequence[Any]) -> None:
        self.loggers = list(loggers)

    def write(self, record: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.write(record)

    def close(self) -> None:
        errors = []
        for logger in self.loggers:
            try:
                logger.close()
            except Exception as err:  # close the others all the same
                errors.append(err)
        if errors:
            raise errors[0]


def make_logger(
    names: Sequence[str], run_dir: Path, cfg: Any = None, resume_step: int | None = None
) -> RunLogger:
    """The run's metric writer: metrics.jsonl plus the loggers in `names` (the keys of the
    config's `logger` section). `cfg` is the run's full config (settings, batch size);
    `resume_step` the step a resumed run restarts from (None for a new run)."""
    names = list(names)
    check_loggers(names)
    run_dir = Path(run_dir)
    settings = _section(cfg, "logger")
    batch = _select(cfg, "data.batch_size")
    loggers: list[Any] = [MetricsWriter(run_dir / "metrics.jsonl")]
    try:
        if "tensorboard" in names:
            tb_cfg = settings.get("tensorboard") or {}
            tb = TensorBoardLogger(run_dir, int(tb_cfg.get("flush_secs", 10)), batch, resume_step)
            if cfg is not None and resume_step is None:
                from omegaconf import OmegaConf

                tb.add_config(OmegaConf.to_yaml(cfg))
            loggers.append(tb)
        if "mlflow" in names:
            loggers.append(_mlflow(run_dir, cfg, settings.get("mlflow") or {}, batch))
        if "wandb" in names:
            from dlx.track.wandb_logger import WandbLogger

            wb = settings.get("wandb") or {}
            loggers.append(
                WandbLogger(
                    run_dir,
                    str(wb.get("project") or _select(cfg, "recipe") or "dlx"),
                    dict(_flatten(_container(cfg))) if cfg is not None else {},
                    mode=str(wb.get("mode") or "offline"),
                    entity=wb.get("entity"),
                    batch_size=batch,
                    resume_step=resume_step,
                )
            )
    except BaseException:
        RunLogger(loggers).close()
        raise
    return RunLogger(loggers)


def _mlflow(run_dir: Path, cfg: Any, settings: Mapping[str, Any], batch: Any) -> MLflowLogger:
    # Default: everything under outputs/, never relative to the current folder.
    root = Path(_select(cfg, "outputs.dir") or run_dir.parent.parent).resolve()
    uri = settings.get("tracking_uri") or f"sqlite:///{root / 'mlflow.db'}"
    artifacts = settings.get("artifact_location") or (root / "mlartifacts").as_uri()
    experiment = settings.get("experiment") or _select(cfg, "recipe") or "dlx"
    params = dict(_flatten(_container(cfg))) if cfg is not None else {}
    return MLflowLogger(run_dir, uri, str(experiment), params, batch, artifacts)


def _container(cfg: Any) -> Any:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _section(cfg: Any, key: str) -> Mapping[str, Any]:
    value = _select(cfg, key)
    value = _container(value) if value is not None else {}
    return value if isinstance(value, Mapping) else {}


def _select(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        if node is None:
            return None
        node = node.get(part) if hasattr(node, "get") else getattr(node, part, None)
    return node


def _flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield from _flatten(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], node
