"""Model registry: `model.name` in the config picks a Flax module; other keys are its fields."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from dlx.errors import UserError, suggest


def _registry() -> dict[str, type]:
    # Imported here so `import dlx.models` stays cheap until a model is built.
    from dlx.models.cnn import CNN, CNNSmall
    from dlx.models.cnn1d import CNN1D
    from dlx.models.rnn import RNNClassifier
    from dlx.models.transformer import TransformerClassifier, TransformerLM

    return {
        "cnn": CNN,
        "cnn_small": CNNSmall,
        "cnn1d": CNN1D,
        "rnn": RNNClassifier,
        "transformer_cls": TransformerClassifier,
        "transformer_lm": TransformerLM,
    }


def model_names() -> list[str]:
    return sorted(_registry())


def build_model(cfg: Mapping[str, Any], num_classes: int) -> Any:
    """The Flax module for `cfg` (the config's `model` section)."""
    registry = _registry()
    kwargs = dict(cfg)
    name = kwargs.pop("name", None)
    if name not in registry:
        raise UserError(
            f"unknown model '{name}'.{suggest(str(name), registry)}",
            hint=f"models: {', '.join(sorted(registry))}",
        )
    cls = registry[name]
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name", "num_classes"}
    for key in kwargs:
        if key not in fields:
            raise UserError(
                f"model '{name}' has no setting 'model.{key}'.{suggest(key, fields)}",
                hint=f"settings of {name}: {', '.join(sorted(fields))}",
            )
    for key, value in kwargs.items():  # OmegaConf lists -> tuples (hashable module fields)
        if isinstance(value, list):
            kwargs[key] = tuple(value)
    return cls(num_classes=num_classes, **kwargs)
