"""Read a sweep dir (sweep.yaml, trials.jsonl, best.yaml) into plain data for the report,
with Optuna's parameter importances computed from the finished trials."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from dlx.report.collect import clean, read_yaml


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _rows(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "trial" in rec:
            rows.append(rec)
    if not rows:
        notes.append("trials.jsonl has no trials yet")
    return sorted(rows, key=lambda r: r["trial"])


def _params(spec: dict[str, Any]) -> list[Any]:
    """The swept parameters (dlx.sweep.space.Param) from sweep.yaml's `params` texts."""
    from dlx.sweep.space import parse_overrides

    texts = [f"{k}={v}" for k, v in (spec.get("params") or {}).items()]
    return parse_overrides(texts).params if texts else []


def _axis(p: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    values = [r["params"].get(p.key) for r in rows]
    numeric = all(_finite(v) for v in values if v is not None) and any(
        v is not None for v in values
    )
    # choice(...): its values evenly spaced, in the order given; a numeric range or interval
    # on a linear (or log) scale
    if p.kind == "choice" or (p.discrete and not numeric):
        return {"key": p.key, "type": "cat", "cats": [cat_text(c) for c in p.choices]}
    return {"key": p.key, "type": "log" if p.log else "linear"}


def cat_text(value: Any) -> str:
    """A choice as the page's JS writes it with String(): 8 -> '8', 0.5 -> '0.5'."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def importances(params: list[Any], rows: list[dict[str, Any]], maximize: bool) -> Any:
    """{param: importance} by Optuna's default evaluator (fANOVA, seeded), or a string saying
    why there are none."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.trial import TrialState, create_trial

    done = [r for r in rows if r.get("status") == "finished" and _finite(r.get("value"))]
    if len(params) < 1:
        return "no swept parameters"
    if len(done) < 2:
        return f"needs at least 2 finished trials (has {len(done)})"
    if len({r["value"] for r in done}) == 1:
        return "every finished trial has the same value: nothing to attribute"
    dists = {}
    for p in params:
        d = p.distribution()
        if hasattr(d, "low"):  # sweep.yaml rounds bounds (:g): widen to the values seen
            seen = [r["params"][p.key] for r in done if _finite(r["params"].get(p.key))]
            lo, hi = min([d.low, *seen]), max([d.high, *seen])
            d = type(d)(lo, hi, log=d.log, step=d.step)
        dists[p.key] = d
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if maximize else "minimize")
    trials = []
    for r in done:
        ps = {k: r["params"][k] for k in dists if k in r["params"]}
        if len(ps) != len(dists):
            continue
        trials.append(
            create_trial(
                state=TrialState.COMPLETE,
                value=float(r["value"]),
                params=ps,
                distributions=dists,
            )
        )
    try:
        study.add_trials(trials)
        got = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    except Exception as err:
        return f"not computed: {type(err).__name__}: {err}"
    return {k: float(v) for k, v in got.items()}


def collect_sweep(path: Path) -> dict[str, Any]:
    notes: list[str] = []
    spec = read_yaml(path / "sweep.yaml", notes) or {}
    best = read_yaml(path / "best.yaml", notes)
    rows = _rows(path / "trials.jsonl", notes)
    metric = spec.get("metric", "value")
    direction = spec.get("direction", "max")
    maximize = direction == "max"
    try:
        params = _params(spec)
    except Exception as err:
        notes.append(f"the parameters in sweep.yaml could not be read: {err}")
        params = []
    keys = [p.key for p in params] or sorted({k for r in rows for k in r.get("params") or {}})
    trials = [
        clean(
            {
                "trial": r["trial"],
                "status": r.get("status"),
                "params": {k: (r.get("params") or {}).get(k) for k in keys},
                "value": r.get("value") if _finite(r.get("value")) else None,
                "step": r.get("step"),
                "duration_s": r.get("duration_s"),
                "run_dir": r.get("run_dir"),
                "error": r.get("error"),
                "overrides": r.get("overrides") or [],
            }
        )
        for r in rows
    ]
    best_so_far, running = [], None
    for t in trials:
        if t["status"] == "finished" and t["value"] is not None:
            v = t["value"]
            if running is None or (v > running if maximize else v < running):
                running = v
        best_so_far.append(running)
    return {
        "dir": str(path),
        "name": spec.get("name") or path.name,
        "spec": clean({k: spec.get(k) for k in ("command", "recipe", "type", "trials", "seed")}),
        "fixed": spec.get("fixed") or [],
        "space": spec.get("params") or {},
        "metric": metric,
        "direction": direction,
        "best": clean(best) if isinstance(best, dict) else None,
        "counts": dict(Counter(t["status"] for t in trials)),
        "keys": keys,
        "trials": trials,
        "axes": [_axis(p, rows) for p in params] or [{"key": k, "type": "linear"} for k in keys],
        "history": {
            "x": [t["trial"] for t in trials],
            "finished": [t["value"] if t["status"] == "finished" else None for t in trials],
            "pruned": [t["value"] if t["status"] == "pruned" else None for t in trials],
            "best": best_so_far,
        },
        "importances": importances(params, rows, maximize),
        "notes": notes,
    }
