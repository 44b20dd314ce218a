"""What a trained model looks at, as PNGs in an out dir (`dlx explain` writes <run dir>/explain/).

- image classifiers: saliency.png and integrated_gradients.png (N test examples: input,
  attribution, predicted and true label);
- sequence classifiers (RNN, 1-D CNN, Transformer on float sequences):
  time_attribution.png (integrated gradients summed per time step);
- Transformers: attention_layer<i>.png (every head of layer i, for the first test input);
- image classifiers, besides: SmoothGrad, Grad-CAM and occlusion (dlx/explain/methods.py),
  every method's map side by side (methods.png), deletion/insertion curves and their AUC
  against random rankings (faithfulness.png, dlx/explain/faithfulness.py), the
  model-randomisation sanity check (sanity.png, dlx/explain/sanity.py), all in summary.json
  (dlx/explain/suite.py runs them);
- always: attributions.npz (the arrays behind the figures) and explain.json (what was done).

Attributions are of the predicted class's logit. The integrated-gradients baseline is a black
image (the smallest input value) for images and zeros (the normalised mean) for sequences.
Integrated gradients start with `steps` interpolation steps and double them (up to 16x) until
every example's attributions sum to f(x) - f(baseline) within 1%; the gap reached is reported.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlx.errors import UserError

MAX_TOKENS = 48  # positions shown in a language model's attention maps
IG_TOLERANCE = 0.01  # completeness: |sum(attr) - (f(x) - f(b))| <= 1% of |f(x) - f(b)|
IG_MAX_REFINE = 16  # steps are doubled up to 16x the requested count to get there
MAX_GRID = 16  # examples drawn in saliency.png and integrated_gradients.png
METHODS_NONE: tuple[str, ...] = ()


@dataclass
class Explained:
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def explain_model(
    model: Any,
    params: Any,
    data: Any,
    out_dir: Path,
    n: int = 16,
    steps: int = 64,
    title: str = "",
    info: dict[str, Any] | None = None,
    options: Any = None,
) -> Explained:
    """The figures for a Flax `model` with `params` on `data`'s first `n` test examples
    (`options`: a dlx.explain.suite.Options for the image methods and checks)."""
    from dlx.explain.suite import Options

    options = options or Options()
    options.check()
    res = Explained(Path(out_dir))
    res.out_dir.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    info = dict(info or {})
    if data.task == "classify":
        x, y = data.x_test[:n], data.y_test[:n]
        _attributions(res, model, params, data, x, y, steps, title, arrays, info, options)
    maps = _attention(res, model, params, data, title, arrays)
    if maps:
        info["attention_layers"] = maps
    if not res.files:
        if not any(res.out_dir.iterdir()):
            res.out_dir.rmdir()
        raise UserError(
            f"nothing to explain for model {type(model).__name__} on {data.name} ({data.task})",
            hint="explain covers image and sequence classifiers (gradients) and Transformers "
            "(attention maps)",
        )
    _drop_stale(res)
    np.savez(res.out_dir / "attributions.npz", **arrays)
    info["files"] = [p.name for p in res.files]
    info["notes"] = res.notes
    (res.out_dir / "explain.json").write_text(json.dumps(info, indent=2) + "\n")
    return res


WRITTEN = (  # what explain writes: a file of these not written this time is an older run's
    "saliency.png",
    "integrated_gradients.png",
    "methods.png",
    "faithfulness.png",
    "sanity.png",
    "summary.json",
    "time_attribution.png",
)


def _drop_stale(res: Explained) -> None:
    """Remove figures an earlier `dlx explain` (other methods or checks) left in out_dir, so
    the folder shows this run only; done once this one succeeded."""
    fresh = {p.name for p in res.files}
    old = [res.out_dir / name for name in WRITTEN]
    old += list(res.out_dir.glob("attention_layer*.png"))
    for path in old:
        if path.name not in fresh and path.is_file():
            path.unlink()


def _attributions(
    res: Explained,
    model: Any,
    params: Any,
    data: Any,
    x: np.ndarray,
    y: np.ndarray,
    steps: int,
    title: str,
    arrays: dict,
    info: dict,
    options: Any,
) -> None:
    import time

    from dlx.explain import figures, suite
    from dlx.explain.attribution import (
        IntegratedGradients,
        completeness,
        logit_score,
        per_step,
        predict_with_saliency,
    )

    if not np.issubdtype(x.dtype, np.floating):
        logits = np.asarray(model.apply({"params": params}, x, train=False))
        arrays.update(x=x, true=y, pred=logits.argmax(-1).astype(np.int32))
        res.notes.append("inputs are token ids: no input gradients (attention maps only)")
        return
    image = len(data.input_shape) == 3
    if not image and options.methods and set(options.methods) - {"integrated_gradients"}:
        raise UserError(
            f"--methods {','.join(options.methods)}: only integrated gradients apply to "
            f"sequence inputs {tuple(data.input_shape)}; the other methods need images",
            hint="leave --methods out for sequence models",
        )
    t0 = time.perf_counter()
    logits, sal = predict_with_saliency(model.apply, params, x)
    seconds = {"saliency": time.perf_counter() - t0}
    pred = logits.argmax(-1).astype(np.int32)
    arrays.update(x=x, true=y, pred=pred)
    wanted, layer = (METHODS_NONE, None)
    if image:
        wanted, layer = suite.resolve(options, model, params, x, res.notes)
    score = logit_score(model.apply, params)
    baseline = float(data.x_train.min()) if image else 0.0
    rel = None
    if not image or "integrated_gradients" in wanted:
        t0 = time.perf_counter()
        max_steps = steps * IG_MAX_REFINE
        integrated_gradients = IntegratedGradients(score)
        while True:  # a curved path (e.g. LayerNorm near the baseline) needs finer steps
            ig = integrated_gradients(x, pred, baseline, steps)
            total, delta = completeness(score, x, pred, baseline, ig)
            rel = float(np.max(np.abs(total - delta) / np.maximum(np.abs(delta), 1e-6)))
            if rel <= IG_TOLERANCE or steps >= max_steps:
                break
            steps *= 2
        seconds["integrated_gradients"] = time.perf_counter() - t0
        arrays.update(integrated_gradients=ig, ig_sum=total, ig_delta=delta)
        info.update(ig_steps=steps, ig_baseline=baseline, ig_max_relative_gap=rel)
        res.notes.append(
            f"integrated gradients: attributions sum to f(x) - f(baseline) within "
            f"{100 * rel:.2f}% ({steps} steps)"
        )
    arrays.update(saliency=sal)
    info.update(n=len(x))
    if image:
        shown = slice(0, MAX_GRID)
        if "saliency" in wanted:
            res.files.append(
                figures.image_grid(
                    res.out_dir / "saliency.png",
                    x[shown],
                    sal[shown],
                    pred[shown],
                    y[shown],
                    f"saliency |d logit / d x| - {title}",
                    signed=False,
                )
            )
        if "integrated_gradients" in wanted:
            res.files.append(
                figures.image_grid(
                    res.out_dir / "integrated_gradients.png",
                    x[shown],
                    ig[shown],
                    pred[shown],
                    y[shown],
                    f"integrated gradients ({steps} steps, black baseline) - {title}",
                    signed=True,
                )
            )
        done = {"saliency": (sal, seconds["saliency"])}
        if "integrated_gradients" in wanted:
            done["integrated_gradients"] = (ig, seconds["integrated_gradients"])
        summary = suite.run_suite(
            res,
            model,
            params,
            data,
            x,
            y,
            pred,
            options,
            wanted,
            layer,
            done,
            (baseline, steps),
            title,
            arrays,
        )
        summary["run"] = {k: info[k] for k in ("run_dir", "checkpoint", "step") if k in info}
        res.files.append(suite.write_summary(res.out_dir, summary))
    elif len(data.input_shape) == 2:
        step_ig = per_step(ig)
        arrays["time_attribution"] = step_ig
        arrays["time_saliency"] = np.linalg.norm(sal.reshape(*sal.shape[:2], -1), axis=-1)
        res.files.append(
            figures.time_grid(
                res.out_dir / "time_attribution.png",
                x,
                step_ig,
                pred,
                y,
                f"integrated gradients per time step ({steps} steps, zero baseline) - {title}",
            )
        )


def _attention(res: Explained, model: Any, params: Any, data: Any, title: str, arrays: dict) -> int:
    """attention_layer<i>.png for the first test input; the number of layers (0: none)."""
    from dlx.explain import figures
    from dlx.explain.attention import attention_maps

    x = data.x_test[:1]
    if data.task == "lm":
        x = x[:, :MAX_TOKENS]
    maps = attention_maps(model, params, x)
    if not maps:
        return 0
    t_in, t = x.shape[1], maps[0].shape[-1]
    if data.vocab is not None and not np.issubdtype(x.dtype, np.floating):
        labels = [_show_token(data.vocab, int(i)) for i in x[0]]
    else:
        labels = [str(i) for i in range(t_in)]
    if t == t_in + 1:  # a CLS token in front
        labels = ["CLS", *labels]
    what = "tokens" if data.task == "lm" else f"test example 0 (label {int(data.y_test[0])})"
    for i, w in enumerate(maps):
        arrays[f"attention_layer{i}"] = w[0]
        res.files.append(
            figures.attention_grid(
                res.out_dir / f"attention_layer{i}.png",
                w[0],
                labels,
                f"attention, layer {i}, {what} - {title}",
            )
        )
    return len(maps)


def _show_token(vocab: Sequence[str], i: int) -> str:
    s = vocab[i] if 0 <= i < len(vocab) else "?"
    return {" ": "␣", "\n": "⏎", "\t": "⇥", "": "∅"}.get(s, s)
