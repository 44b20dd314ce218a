"""Tasks by name: `task.name` in the config (`task=classify|lm|regress|gan`; `auto` follows
the dataset: its `task` field says classify or lm). See dlx/tasks/base.py for the interface."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dlx.errors import UserError, suggest
from dlx.tasks.base import Task
from dlx.tasks.supervised import Classify, LanguageModel, Regress, lm_metrics

__all__ = ["TASKS", "Classify", "LanguageModel", "Regress", "Task", "lm_metrics", "make_task"]


def _supervised(cls: type) -> Callable[[Mapping[str, Any], Any, Any], Task]:
    def build(settings: Mapping[str, Any], cfg: Any, data: Any) -> Task:
        from dlx.models import build_model

        model = build_model(_plain(cfg.model), data.num_classes, tuple(data.input_shape))
        continual = cfg.get("continual") or {}
        if cls is Classify and continual and continual.get("strategy") == "ewc":
            return Classify(model, ewc_lambda=float(continual.get("ewc_lambda", 0.0)))
        return cls(model)

    return build


def _gan(settings: Mapping[str, Any], cfg: Any, data: Any) -> Task:
    from dlx.tasks.gan import build_gan

    return build_gan(settings, cfg, data)


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
