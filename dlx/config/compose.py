"""Compose a run's config with Hydra's compose API (no @hydra.main, no chdir) and validate it.

The recipe file is the primary config; `conf/` (and a user's --config-dir) are added to the
search path so its defaults list can pick group options (data, model, optim, ...).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dlx.config import compose_cache, paths, schema
from dlx.errors import UserError, first_line, suggest

DEFAULT_RECIPE = "cnn"


def split_recipe(overrides: Sequence[str]) -> tuple[str, list[str]]:
    """Pull `recipe=NAME` out of the overrides (it picks the primary config, not a value)."""
    recipe, rest = DEFAULT_RECIPE, []
    for o in overrides:
        if o.startswith("recipe="):
            recipe = o.split("=", 1)[1]
        else:
            rest.append(o)
    return recipe, rest


def compose(overrides: Sequence[str] = (), config_dir: Path | None = None) -> DictConfig:
    """The validated config for `recipe=... key=value ...` (Hydra override grammar)."""
    recipe, rest = split_recipe(overrides)
    for o in rest:
        if o.lstrip("+~").startswith("=") or (o and "=" not in o and not o.startswith("~")):
            raise UserError(
                f"override '{o}' is not key=value (it has no key or no value)",
                hint="e.g. trainer.epochs=3, optim=sgd, +model.widths=[8,16], ~logger.tensorboard",
            )
    recipes = paths.find_recipes(config_dir)
    if recipe not in recipes:
        raise UserError(
            f"unknown recipe '{recipe}'.{suggest(recipe, recipes)}",
            hint=f"available recipes: {', '.join(recipes)} (see `dlx recipes`); your own go in "
            "./recipes/<name>.yaml or --config-dir DIR",
        )
    path = recipes[recipe]
    key = compose_cache.cache_key(path, rest, config_dir)
    cfg = compose_cache.load(key)
    if cfg is None:
        cfg = _hydra(path, rest, config_dir)
        # A recipe that names its own module or loader (`_target_`, or a name an installed
        # package registers) drops the base config's default group for that section, whose
        # keys (cnn's features, mnist's path, ...) would otherwise be merged into the user's.
        own = [g for g in ("model", "data") if _own(cfg, g, rest, config_dir)]
        if own:
            kept = [_force(o, own) for o in rest]
            cfg = _hydra(path, [*(f"~{g}" for g in own), *kept], config_dir)
        compose_cache.store(key, cfg)
    OmegaConf.set_struct(cfg, False)
    cfg.recipe = recipe
    return validate(cfg)


def _force(override: str, groups: Sequence[str]) -> str:
    """`data.batch_size=30` as `++data.batch_size=30` when the data group was dropped: the key
    came from the dropped file, and with `_target_` given on the command line (not in the
    recipe) nothing else defines it. The schema and the user's function still check it."""
    key = override.split("=", 1)[0]
    if override[:1] in "+~" or "." not in key or key.split(".", 1)[0] not in groups:
        return override
    return f"++{override}"


def _hydra(path: Path, overrides: Sequence[str], config_dir: Path | None) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    search = ",".join(f"file://{d}" for d in paths.conf_dirs(config_dir))
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(path.parent), version_base=None):
            return hydra_compose(
                config_name=path.stem, overrides=[f"hydra.searchpath=[{search}]", *overrides]
            )
    except Exception as err:  # Hydra raises several types; all are the user's input here
        import yaml

        if isinstance(err, yaml.YAMLError):  # a recipe or conf/ file that is not YAML
            where = getattr(getattr(err, "problem_mark", None), "name", None) or str(path)
            raise UserError(
                f"cannot parse {where}: {first_line(err)}",
                hint="fix the YAML of that file (see `dlx recipes` for the recipe files)",
            ) from err
        raise _friendly(err, overrides, config_dir, path.stem) from err
    finally:
        GlobalHydra.instance().clear()


def _own(cfg: DictConfig, group: str, overrides: Sequence[str], config_dir: Path | None) -> bool:
    section = cfg.get(group) or {}
    if "name" not in section or _picks_group(group, overrides):
        return False
    return "_target_" in section or section["name"] not in group_options(group, config_dir)


def _picks_group(group: str, overrides: Sequence[str]) -> bool:
    return any(o.lstrip("+~").split("=", 1)[0] == group for o in overrides)


def validate(cfg: DictConfig) -> DictConfig:
    """Merge onto the typed schema: wrong types and out-of-range values become UserErrors."""
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    # Datasets have keys of their own (text: seq_len, ...): the schema types the common ones
    # and the rest pass through (Hydra already rejected keys no config file defines).
    known = {f.name for f in dataclasses.fields(schema.DataConfig)}
    data_extra = {k: v for k, v in cfg.data.items() if k not in known}
    for k in data_extra:
        del cfg.data[k]
    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema.DlxConfig), cfg)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        if isinstance(err, ConfigKeyError):
            raise UserError(
                f"unknown config key '{key}'.{suggest(key, _keys(_schema_dict()))}",
                hint="see every key with `dlx show`",
            ) from err
        raise UserError(
            f"wrong value for '{key}': {str(err).splitlines()[0]}",
            hint=f"check the type of '{key}' with `dlx show`",
        ) from err
    check_ranges(typed)
    OmegaConf.set_struct(typed, False)  # model sections differ per architecture
    OmegaConf.set_struct(typed.data, False)  # typed nodes keep their own flag: open it too
    for k, v in data_extra.items():
        typed.data[k] = v
    return typed


def check_ranges(cfg: DictConfig) -> None:
    """Choices, positive counts and bounded numbers (schema.CHOICES, POSITIVE, RANGES): a
    UserError naming the key, the value and what it may be."""
    for key, allowed in schema.CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            names = ", ".join("null" if a is None else a for a in allowed)
            good = next(a for a in allowed if a is not None)
            raise UserError(
                f"'{key}' must be one of {names}, got '{value}'", hint=f"e.g. {key}={good}"
            )
    for key in schema.POSITIVE:
        value = OmegaConf.select(cfg, key)
        if not schema.Range(0, None, low_open=True).holds(value):
            raise UserError(
                f"'{key}' must be a finite number > 0, got {value}",
                hint=f"e.g. {key}={_example(key)}",
            )
    max_steps = cfg.trainer.max_steps
    if max_steps is not None and max_steps <= 0:
        raise UserError(
            f"'trainer.max_steps' must be positive or null, got {max_steps}",
            hint="e.g. trainer.max_steps=100, or trainer.max_steps=null for whole epochs",
        )
    for key, allowed_range in schema.RANGES.items():
        value = OmegaConf.select(cfg, key)
        if not allowed_range.holds(value):
            raise UserError(
                f"'{key}' must be {allowed_range.describe()}, got {value}",
                hint=f"e.g. {allowed_range.example}",
            )
    first_last = list(cfg.trainer.profile_steps)
    if len(first_last) != 2 or not 1 <= first_last[0] <= first_last[1]:
        raise UserError(
            f"'trainer.profile_steps' must be [first, last] with 1 <= first <= last, got "
            f"{first_last}",
            hint="e.g. trainer.profile_steps=[10,15]",
        )


def _example(key: str) -> object:
    """A valid value for a POSITIVE key: its schema default."""
    return OmegaConf.select(OmegaConf.structured(schema.DlxConfig), key)


def _friendly(
    err: Exception, overrides: Sequence[str], config_dir: Path | None, recipe: str = DEFAULT_RECIPE
) -> UserError:
    """Turn a Hydra composition error into one actionable message."""
    from hydra.errors import MissingConfigException, OverrideParseException

    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    if isinstance(err, OverrideParseException):
        quoted = next((o for o in overrides if o.split("=", 1)[-1].count("=")), None)
        if quoted:  # e.g. parallel.xla_flags=--flag=value: the value needs quotes
            key, value = quoted.split("=", 1)
            return UserError(
                f"cannot parse override '{quoted}': its value contains '='",
                hint=f"quote the value (in the shell too): '{key}=\"{value}\"'",
            )
        return UserError(
            f"cannot parse override: {msg}",
            hint="overrides use Hydra's grammar: key=value, +new_key=value, ~key",
        )
    loaded = re.search(r"Could not (?:load|find) '([\w.-]+)/([^']+)'", msg)
    if loaded:  # a list option of a group: logger=[jsonl,foo]
        group, option = loaded.groups()
        options = group_options(group, config_dir)
        return UserError(
            f"unknown option '{option}' for config group '{group}'.{suggest(option, options)}",
            hint=f"available for {group}: {', '.join(options) or '(none)'}",
        )
    if isinstance(err, MissingConfigException) or "Could not find '" in msg:
        group, option = _missing_option(msg, overrides)
        if group:
            options = group_options(group, config_dir)
            return UserError(
                f"unknown option '{option}' for config group '{group}'.{suggest(option, options)}",
                hint=f"available for {group}: {', '.join(options) or '(none)'}",
            )
        return UserError(msg)
    if msg.startswith("Could not override '"):
        key = msg.split("'")[1]
        return UserError(
            f"unknown config key '{key}'.{suggest(key, _all_keys(config_dir, key, recipe))}",
            hint="see every key with `dlx show`",
        )
    return UserError(msg)


def _missing_option(msg: str, overrides: Sequence[str]) -> tuple[str | None, str]:
    for o in overrides:
        if "=" in o and "." not in o.split("=", 1)[0]:
            group, option = o.lstrip("+").split("=", 1)
            if f"{group}/{option}" in msg or f"'{option}'" in msg:
                return group, option
    return None, ""


def group_options(group: str, config_dir: Path | None = None) -> list[str]:
    """Option names of a config group, e.g. group_options('optim') -> ['adam', 'adamw', 'sgd']."""
    names = set()
    for root in paths.conf_dirs(config_dir):
        names |= {f.stem for f in (root / group).glob("*.yaml")}
    return sorted(names)


def _all_keys(config_dir: Path | None, near: str, recipe: str = DEFAULT_RECIPE) -> list[str]:
    """Dotted keys of the recipe's config, to suggest the one the user meant."""
    try:
        cfg = compose([f"recipe={recipe}"], config_dir)
    except UserError:
        return []
    out = _keys(OmegaConf.to_container(cfg))
    # Suggest among keys under the same section first; difflib then ranks them.
    section = near.rsplit(".", 1)[0] + "." if "." in near else ""
    same = [k for k in out if k.startswith(section)]
    return same or out


def _keys(node: object, prefix: str = "") -> list[str]:
    """Dotted leaf keys of a nested dict."""
    if not isinstance(node, dict):
        return [prefix[:-1]]
    return [k for key, v in node.items() for k in _keys(v, f"{prefix}{key}.")]


def _schema_dict() -> dict:
    return OmegaConf.to_container(OmegaConf.structured(schema.DlxConfig))  # type: ignore[return-value]
