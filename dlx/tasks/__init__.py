"""Tasks by name: `task.name` in the config (`task=classify|lm|regress|gan`; `auto` follows
the dataset: its `task` field says classify or lm). See dlx/tasks/base.py for the interface."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dlx.errors import UserError, suggest
from dlx.tasks.augment import augment_from
from dlx.tasks.base import Task
from dlx.tasks.supervised import Classify, LanguageModel, Regress, lm_metrics
from dlx.training.step import PRECISIONS

__all__ = ["TASKS", "Classify", "LanguageModel", "Regress", "Task", "lm_metrics", "make_task"]


def _supervised(cls: type) -> Callable[[Mapping[str, Any], Any, Any], Task]:
    def build(settings: Mapping[str, Any], cfg: Any, data: Any) -> Task:
        from dlx.models import build_model

        model = build_model(_plain(cfg.model), data.num_classes, tuple(data.input_shape))
        numerics = step_settings(cfg)
        numerics.update(loss_settings(cls, settings))
        augment = augment_from(cfg)
        if augment.active:
            if cls is not Classify:
                raise UserError(
                    f"augment.* is for image classifiers; this run's task is {cls.name}",
                    hint="drop the augment.* overrides",
                )
            augment.check(tuple(data.input_shape))
            numerics["augment"] = augment
        continual = cfg.get("continual") or {}
        if cls is Classify and continual and continual.get("strategy") == "ewc":
            ewc = float(continual.get("ewc_lambda", 0.0))
            return Classify(model, ewc_lambda=ewc, **numerics)
        if cls is Classify and continual and continual.get("strategy") in ("lwf", "si", "agem"):
            from dlx.continual.learners import continual_task

            return continual_task(continual, model, numerics)
        return cls(model, **numerics)

    return build


# task.* settings each supervised task takes (beyond `name`)
LOSS_SETTINGS = {"classify": ("label_smoothing",), "lm": ("label_smoothing",), "regress": ()}


def loss_settings(cls: type, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The task.* settings of a supervised task, checked: unknown keys and a label smoothing
    outside [0, 1) are UserErrors."""
    known = LOSS_SETTINGS[cls.name]
    for key, value in settings.items():
        if key not in known and not (key == "label_smoothing" and value == 0):  # task=auto's
            raise UserError(
                f"task={cls.name} has no setting 'task.{key}'.{suggest(key, known)}",
                hint=f"its settings: {', '.join(known) or 'none'}",
            )
    out: dict[str, Any] = {}
    if "label_smoothing" in known and "label_smoothing" in settings:
        value = settings["label_smoothing"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise UserError(
                f"task.label_smoothing must be a number in [0, 1), got {value!r}",
                hint="e.g. task.label_smoothing=0.1",
            )
        out["label_smoothing"] = float(value)
    return out


def step_settings(cfg: Any) -> dict[str, Any]:
    """trainer.precision and trainer.grad_accum as task fields (the defaults when a config
    predates them: an old run dir's config.yaml)."""
    trainer = cfg.get("trainer") or {}
    precision, accum = str(trainer.get("precision", "fp32")), trainer.get("grad_accum", 1)
    if precision not in PRECISIONS:  # the schema checks composed configs; not every cfg is
        raise UserError(
            f"trainer.precision={precision} is not one of {', '.join(PRECISIONS)}",
            hint="trainer.precision=fp32 or trainer.precision=bf16",
        )
    if not isinstance(accum, int) or isinstance(accum, bool) or accum < 1:
        raise UserError(
            f"trainer.grad_accum must be a positive integer, got {accum!r}",
            hint="e.g. trainer.grad_accum=4",
        )
    return {"precision": precision, "grad_accum": accum}


def _gan(settings: Mapping[str, Any], cfg: Any, data: Any) -> Task:
    from dataclasses import replace

    from dlx.tasks.gan import build_gan

    return replace(build_gan(settings, cfg, data), **step_settings(cfg))


# name -> builder(task settings, whole config, dataset)
TASKS: dict[str, Callable[[Mapping[str, Any], Any, Any], Task]] = {
    "classify": _supervised(Classify),
    "lm": _supervised(LanguageModel),
    "regress": _supervised(Regress),
    "gan": _gan,
}


def _plain(node: Any) -> dict:
    from omegaconf import DictConfig, OmegaConf

    return (
        OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    )


def task_name(cfg: Any, data: Any) -> str:
    name = (cfg.get("task") or {}).get("name", "auto")
    return getattr(data, "task", "classify") if name == "auto" else name


def make_task(cfg: Any, data: Any) -> Task:
    """The task `cfg.task` names, with its model(s) built for `data`."""
    name = task_name(cfg, data)
    if name not in TASKS:
        raise UserError(
            f"unknown task '{name}'.{suggest(str(name), TASKS)}",
            hint=f"task={'|'.join(['auto', *TASKS])}",
        )
    settings = {k: v for k, v in _plain(cfg.get("task") or {}).items() if k != "name"}
    return TASKS[name](settings, cfg, data)
