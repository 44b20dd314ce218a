"""The search space: Hydra sweep overrides -> parameters -> grid points, random points and
Optuna distributions.

`optim.lr=1e-4,3e-4` and `choice(...)` are a list of values, `range(a,b[,step])` a list (an
integer range is ordinal for Optuna), `interval(a,b)` a continuous range (`tag(log, ...)` for a
log scale, `tag(int, ...)` for integers). Every value keeps the exact override text it came
from, so a trial's `dlx train` command is built from what the user typed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dlx.errors import UserError

# Values Optuna stores as they are; any other choice (a list, a quoted string) is stored as its
# override text, e.g. "[4,8]".
_PLAIN = (int, float, str, bool, type(None))


@dataclass(frozen=True)
class Param:
    """One swept key. `key` is the override's key as typed, with any +/++ prefix."""

    key: str
    kind: str  # "choice" | "range" | "interval"
    choices: tuple[Any, ...] = ()  # choice/range: the values Optuna stores
    texts: tuple[str, ...] = ()  # choice/range: the override text of each value
    low: float = 0.0  # interval bounds (inclusive)
    high: float = 0.0
    log: bool = False
    integer: bool = False  # int range (ordinal) or tag(int, interval(...))
    step: int = 1

    @property
    def discrete(self) -> bool:
        return self.kind != "interval"

    def text(self, value: Any) -> str:
        """The override text of a value, e.g. 0.001 -> '0.001', '[4,8]' -> '[4,8]'."""
        if self.discrete:
            pairs = list(zip(self.choices, self.texts, strict=True))
            # Exact type first: 1 == 1.0 == True, but they are different overrides.
            for choice, text in pairs:
                if choice == value and type(choice) is type(value):
                    return text
            for choice, text in pairs:
                if choice == value or (_is_nan(choice) and _is_nan(value)):  # nan != nan
                    return text
            raise ValueError(f"{value!r} is not a value of {self.key}")
        return str(int(value)) if self.integer else repr(float(value))

    def override(self, value: Any) -> str:
        return f"{self.key}={self.text(value)}"

    def describe(self) -> str:
        """In Hydra's grammar, e.g. tag(log, interval(0.0001, 0.01))."""
        if self.kind == "interval":
            tags = [t for t, on in (("log", self.log), ("int", self.integer)) if on]
            text = f"interval({self.low:g}, {self.high:g})"
            return f"tag({', '.join(tags)}, {text})" if tags else text
        return f"{self.kind}({', '.join(self.texts)})"

    def check_values(self) -> list[Any]:
        """Values to compose before launching: every choice (each can be a different
        option or type); a range or interval's ends (one type throughout)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "range":
            return list(dict.fromkeys([self.choices[0], self.choices[-1]]))
        return [self.low, self.high]

    def sample(self, rng: Any) -> Any:
        """A uniform draw (log-uniform for tag(log)), from a numpy Generator."""
        if self.discrete:
            return self.choices[int(rng.integers(len(self.choices)))]
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = float(rng.uniform(self.low, self.high))
        return round(value) if self.integer else value

    def distribution(self) -> Any:
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "range" and self.integer:
            return IntDistribution(int(self.choices[0]), int(self.choices[-1]), step=self.step)
        if self.discrete:
            return CategoricalDistribution(self.choices)
        if self.integer:
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(self.low, self.high, log=self.log)


@dataclass
class ParsedOverrides:
    """The command's overrides split by role."""

    fixed: list[str] = field(default_factory=list)  # passed to every trial unchanged
    params: list[Param] = field(default_factory=list)  # swept
    settings: dict[str, Any] = field(default_factory=dict)  # sweep=..., sweep.KEY=...
    outputs_dir: str | None = None  # outputs.dir=: the root the sweep folder goes under


def parse_overrides(overrides: Sequence[str]) -> ParsedOverrides:
    """Split `dlx sweep` overrides into fixed ones, swept parameters and sweep settings."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise UserError(
            f"cannot parse override: {str(err).splitlines()[0]}",
            hint="sweeps use Hydra's grammar: key=a,b  key=choice(a,b)  key=range(1,5)  "
            "key=interval(0.1,1)  key=tag(log,interval(1e-4,1e-2))",
        ) from err
    out = ParsedOverrides()
    # A key given again replaces the earlier one (a base command plus a swept value):
    # keep only the last occurrence of each key, in its place.
    last = {o.key_or_group: i for i, o in enumerate(parsed)}
    for i, o in enumerate(parsed):
        key = o.key_or_group
        if last[key] != i:
            continue
        if key == "sweep" or key.startswith("sweep."):
            if o.is_sweep_override():
                raise UserError(f"'{o.input_line}': sweep settings take one value")
            out.settings[key] = o.value()
        elif key == "outputs.dir":
            if o.is_sweep_override():
                raise UserError("outputs.dir cannot be swept: every trial goes in the sweep dir")
            out.outputs_dir = str(o.value())
        elif o.is_sweep_override():
            out.params.append(_param(o))
        else:
            out.fixed.append(o.input_line)
    return out


def _param(o: Any) -> Param:
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    key, sweep = o.get_key_element(), o.value()
    if isinstance(sweep, IntervalSweep):
        low, high = float(sweep.start), float(sweep.end)
        log, integer = "log" in sweep.tags, "int" in sweep.tags
        if not low < high:
            raise UserError(
                f"'{o.input_line}': interval needs low < high",
                hint=f"e.g. {key}=interval({min(low, high):g}, {max(low, high):g})",
            )
        if log and low <= 0:
            raise UserError(
                f"'{o.input_line}': a log interval needs positive bounds",
                hint=f"e.g. {key}=tag(log, interval(1e-4, {high:g}))",
            )
        return Param(key, "interval", low=low, high=high, log=log, integer=integer)
    if isinstance(sweep, ChoiceSweep | RangeSweep):
        values, texts = list(o.sweep_iterator()), list(o.sweep_string_iterator())
        if not values:
            raise UserError(
                f"'{o.input_line}' gives no values", hint=f"e.g. {key}=choice(1e-3,3e-3)"
            )
        choices, kept = [], []
        for value, text in zip(values, texts, strict=True):
            stored = value if isinstance(value, _PLAIN) else text
            if stored not in choices:  # a repeated value would be the same trial twice
                choices.append(stored)
                kept.append(text)
        if isinstance(sweep, RangeSweep):
            integer = all(type(v) is int for v in choices) and int(sweep.step) > 0
            step = int(sweep.step) if integer else 1
            return Param(key, "range", tuple(choices), tuple(kept), integer=integer, step=step)
        return Param(key, "choice", tuple(choices), tuple(kept))
    raise UserError(
        f"'{o.input_line}': {type(sweep).__name__} is not supported by dlx sweep",
        hint="use a,b,c  choice(...)  range(...)  interval(a,b)  tag(log, interval(a,b))",
    )


def grid_points(params: Sequence[Param]) -> list[dict[str, Any]]:
    """The cartesian product, in Hydra's order (the last key varies fastest)."""
    for p in params:
        if not p.discrete:
            raise UserError(
                f"{p.key}={p.describe()} is continuous: a grid needs a list of values",
                hint="use sweep=random or sweep=optuna, or a list: key=a,b,c / range(...)",
            )
    keys = [p.key for p in params]
    combos = itertools.product(*(p.choices for p in params))
    return [dict(zip(keys, combo, strict=True)) for combo in combos]


def random_points(params: Sequence[Param], n: int, seed: int) -> list[dict[str, Any]]:
    """n independent draws from one seeded stream: point i never depends on n, so raising
    sweep.trials later extends the same sweep instead of starting a different one."""
    import numpy as np

    rng = np.random.default_rng(seed)
    points: list[dict[str, Any]] = []
    for _ in range(n):
        # A point drawn before is drawn again (a small discrete space would otherwise repeat
        # trials); after 100 tries the space is taken to be used up and the repeat kept.
        for _ in range(100):
            point = {p.key: p.sample(rng) for p in params}
            if point not in points:
                break
        points.append(point)
    return points


def point_overrides(params: Sequence[Param], point: dict[str, Any]) -> list[str]:
    return [p.override(point[p.key]) for p in params]


def _is_nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)
