"""Models: `model.name` picks a built-in Flax module (or one an installed package registers
under the `dlx.models` entry-point group); `model._target_: mypkg.nets.Net` names the user's
own. The other keys of the section are the module's fields; `num_classes` and `input_shape`
are passed when the module (or factory function) takes them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from dlx.errors import UserError, suggest


def _registry() -> dict[str, type]:
    # Imported here so `import dlx.models` stays cheap until a model is built.
    from dlx.models.cnn import CNN, CNNSmall
    from dlx.models.cnn1d import CNN1D
    from dlx.models.mlp import MLP
    from dlx.models.rnn import RNNClassifier
    from dlx.models.transformer import TransformerClassifier, TransformerLM

    return {
        "cnn": CNN,
        "cnn_small": CNNSmall,
        "cnn1d": CNN1D,
        "mlp": MLP,
        "rnn": RNNClassifier,
        "transformer_cls": TransformerClassifier,
        "transformer_lm": TransformerLM,
    }


def model_names() -> list[str]:
    return sorted(_registry())


def build_model(
    cfg: Mapping[str, Any], num_classes: int, input_shape: tuple[int, ...] | None = None
) -> Any:
    """The Flax module for `cfg` (the config's `model` section)."""
    from dlx.config.targets import TARGET, entry_points, import_target, load_entry_point

    kwargs = dict(cfg)
    if TARGET in kwargs:
        target = kwargs.pop(TARGET)
        kwargs.pop("name", None)
        obj = import_target(target, "model._target_")
        return _instantiate(obj, kwargs, num_classes, input_shape, f"model._target_={target}")
    registry = _registry()
    name = kwargs.pop("name", None)
    plugins = entry_points("model")
    if name not in registry and name in plugins:
        obj = load_entry_point(plugins[name], "model")
        return _instantiate(obj, kwargs, num_classes, input_shape, f"model.name={name}")
    if name not in registry:
        known = sorted(registry) + sorted(plugins)
        raise UserError(
            f"unknown model '{name}'.{suggest(str(name), known)}",
            hint=f"models: {', '.join(known)}; or your own: model._target_=mypkg.nets.Net",
        )
    cls = registry[name]
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name", "num_classes"}
    for key in kwargs:
        if key not in fields:
            raise UserError(
                f"model '{name}' has no setting 'model.{key}'.{suggest(key, fields)}",
                hint=f"settings of {name}: {', '.join(sorted(fields))}",
            )
    check_fields(cls, kwargs, f"model '{name}'", sizes=True)
    return cls(num_classes=num_classes, **_hashable(kwargs))


def check_fields(cls: type, kwargs: Mapping[str, Any], where: str, sizes: bool = False) -> None:
    """Each setting against the module's field annotation (int, float, bool, str, a sequence
    of ints, Optional of those): a UserError naming the key, not a TypeError deep inside
    `init`. `dropout*` settings must lie in [0, 1); with `sizes` (the built-in models), ints
    must be >= 0, and > 0 where the default is (widths, heads, layers)."""
    import math
    import typing

    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations of a user's module: nothing to check
        return
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for key, value in kwargs.items():
        want = hints.get(key)
        if want is None:
            continue
        ok, kind = _matches(value, want)
        if not ok:
            raise UserError(
                f"{where}: 'model.{key}' must be {kind}, got {value!r}",
                hint=f"e.g. model.{key}={_show(defaults.get(key))}",
            )
        numbers = [value] if isinstance(value, int | float) else []
        if isinstance(value, list | tuple):
            numbers = list(value)
        bad = None
        if key.startswith("dropout") and isinstance(value, int | float):
            if not (0.0 <= value < 1.0 and math.isfinite(value)):
                bad = "a rate in [0, 1)"
        elif sizes and any(isinstance(v, int) and not isinstance(v, bool) for v in numbers):
            default = defaults.get(key)
            positive = isinstance(default, list | tuple) or (
                isinstance(default, int) and not isinstance(default, bool) and default > 0
            )
            if any(v < (1 if positive else 0) for v in numbers):
                bad = "> 0" if positive else ">= 0"
        if bad:
            raise UserError(
                f"{where}: 'model.{key}' must be {bad}, got {value!r}",
                hint=f"e.g. model.{key}={_show(defaults.get(key))}",
            )


def _matches(value: Any, want: Any) -> tuple[bool, str]:
    """(value fits the annotation `want`, how to say what it should be)."""
    import typing
    from collections.abc import Sequence

    origin, args = typing.get_origin(want), typing.get_args(want)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        fits = [_matches(value, a) for a in args]
        return any(ok for ok, _ in fits), " or ".join(k for _, k in fits)
    if want is type(None):
        return value is None, "null"
    if want is bool:
        return isinstance(value, bool), "true or false"
    if want is int:
        return isinstance(value, int) and not isinstance(value, bool), "an integer"
    if want is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, "a number"
    if want is str:
        return isinstance(value, str), "a string"
    if origin in (Sequence, list, tuple, typing.Sequence) and args:
        item = args[0]
        plural = {"an integer": "integers", "a number": "numbers", "a string": "strings"}
        kind = f"a list of {plural.get(_matches(None, item)[1], 'values')}"
        if not isinstance(value, list | tuple):
            return False, kind
        return all(_matches(v, item)[0] for v in value), kind
    return True, ""  # an annotation we do not model: the module checks it itself


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return (
        "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    )


def _hashable(kwargs: dict) -> dict:
    """OmegaConf lists -> tuples: module fields must be hashable (the module is a static jit
    argument inside the task)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def _instantiate(
    obj: Any, kwargs: dict, num_classes: int, input_shape: tuple | None, where: str
) -> Any:
    """A user's module class (a Flax dataclass) or a factory function returning a module."""
    import flax.linen as nn

    from dlx.config.targets import parameters

    if isinstance(obj, type) and issubclass(obj, nn.Module):
        takes = {f.name for f in dataclasses.fields(obj)} - {"parent", "name"}
        call = obj
    elif callable(obj) and not isinstance(obj, type):
        takes, call = parameters(obj), obj
    else:
        raise UserError(
            f"{where} is {type(obj).__name__} {obj!r}, not a flax.linen.Module class or a "
            "function returning one",
            hint="point _target_ at a class deriving from flax.linen.Module",
        )
    open_ended = any(t.startswith("**") for t in takes)  # a factory taking **kwargs
    unknown = [] if open_ended else sorted(set(kwargs) - takes)
    if unknown:
        raise UserError(
            f"{where} has no setting 'model.{unknown[0]}'.{suggest(unknown[0], takes)}",
            hint=f"settings it takes: {', '.join(sorted(takes - {'num_classes', 'input_shape'}))}",
        )
    if isinstance(obj, type) and dataclasses.is_dataclass(obj):
        check_fields(obj, kwargs, where)
    given = _hashable(kwargs)
    if "num_classes" in takes:
        given.setdefault("num_classes", num_classes)
    if "input_shape" in takes and input_shape is not None:
        given.setdefault("input_shape", tuple(input_shape))
    try:
        module = call(**given)
    except TypeError as err:
        raise UserError(f"{where}: cannot build the model: {err}") from err
    if not isinstance(module, nn.Module):
        raise UserError(
            f"{where} returned {type(module).__name__}, not a flax.linen.Module",
            hint="return the module instance from the factory function",
        )
    return module
