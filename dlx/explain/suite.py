"""Every attribution method on the same image examples, how faithful each is, and whether it
passes the model-randomisation check: methods.png, faithfulness.png, sanity.png and
explain/summary.json.

Each method gives an (n, H, W) importance map: saliency and SmoothGrad |gradient| (max over
channels), integrated gradients summed over channels (signed), Grad-CAM, occlusion (signed).
Faithfulness ranks pixels by that map; the sanity check correlates it with the same method's
map under randomly re-initialised weights.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlx.errors import UserError, suggest

METHODS = ("saliency", "integrated_gradients", "smoothgrad", "gradcam", "occlusion")
SIGNED = frozenset({"integrated_gradients", "occlusion"})
ALIASES = {"ig": "integrated_gradients", "grad_cam": "gradcam", "grad-cam": "gradcam"}
SHOWN = 8  # examples in methods.png
SANITY_SHOWN = 3  # examples per method in sanity.png


@dataclass(frozen=True)
class Options:
    methods: tuple[str, ...] | None = None  # None: every method that fits the model
    layer: str | None = None  # Grad-CAM's layer (module path); None: the last conv layer
    noise: float = 0.15  # SmoothGrad sigma, as a fraction of the data's value range
    samples: int = 32  # SmoothGrad noisy copies
    patch: int | None = None  # occlusion patch side; None: about 1/7 of the image side
    stride: int | None = None  # occlusion stride; None: half the patch
    faith_steps: int = 20  # points of the deletion/insertion curves (after 0)
    faith_patch: int = 1  # the unit removed/inserted: pixels (1) or patch x patch squares
    random_seeds: int = 3  # random rankings averaged for the reference curves
    faithfulness: bool = True
    sanity: bool = True
    cascade: bool = False  # also randomise layer by layer from the output down

    def check(self) -> None:
        """Errors that need no model: before anything is loaded."""
        if not self.noise > 0:
            raise UserError(f"--noise must be > 0, got {self.noise}", hint="e.g. --noise 0.15")
        for flag, value, example in (
            ("--samples", self.samples, 32),
            ("--patch", self.patch, 4),
            ("--stride", self.stride, 2),
            ("--faith-steps", self.faith_steps, 20),
            ("--faith-patch", self.faith_patch, 2),
        ):
            if value is not None and value < 1:
                raise UserError(
                    f"{flag} must be at least 1, got {value}", hint=f"e.g. {flag} {example}"
                )


def parse_methods(text: str | None) -> tuple[str, ...] | None:
    """'all' (or nothing) -> None; 'saliency,gradcam' -> the names, checked."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    names = []
    for raw in text.split(","):
        name = ALIASES.get(raw.strip().lower(), raw.strip().lower())
        if name not in METHODS:
            raise UserError(
                f"unknown explain method '{raw.strip()}'." + suggest(name, METHODS),
                hint=f"--methods takes a comma list of {', '.join(METHODS)} (or all)",
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def occlusion_geometry(opts: Options, height: int, width: int) -> tuple[int, int]:
    side = min(height, width)
    patch = opts.patch if opts.patch is not None else max(2, round(side / 7))
    if patch > side:
        raise UserError(
            f"--patch {patch} is larger than the {height}x{width} images",
            hint=f"use --patch between 1 and {side} (e.g. --patch {max(1, side // 7)})",
        )
    stride = opts.stride if opts.stride is not None else max(1, patch // 2)
    return patch, stride


def to_map(name: str, attr: np.ndarray) -> np.ndarray:
    """A method's output -> (n, H, W) importance."""
    if name in ("saliency", "smoothgrad"):
        return np.abs(attr).max(-1)
    if name == "integrated_gradients":
        return attr.sum(-1)
    return attr


class Maps:
    """Computes each method's maps for a model with given params (trained or randomised)."""

    def __init__(self, model: Any, data: Any, opts: Options, ig: tuple[float, int], layer: Any):
        self.model, self.opts, self.layer = model, opts, layer
        self.ig_baseline, self.ig_steps = ig
        self.sigma = opts.noise * float(data.x_train.max() - data.x_train.min())
        self.patch, self.stride = occlusion_geometry(opts, *data.input_shape[:2])

    def __call__(self, name: str, params: Any, x: np.ndarray, target: np.ndarray) -> np.ndarray:
        from dlx.explain import attribution, methods

        score = attribution.logit_score(self.model.apply, params)
        if name == "saliency":
            attr = attribution.saliency(score, x, target)
        elif name == "integrated_gradients":
            ig = attribution.IntegratedGradients(score)
            attr = ig(x, target, self.ig_baseline, self.ig_steps)
        elif name == "smoothgrad":
            attr = methods.smoothgrad(score, x, target, self.sigma, self.opts.samples)
        elif name == "gradcam":
            attr = methods.gradcam(self.model, params, x, target, self.layer.path)[1]
        else:
            attr = methods.occlusion(score, x, target, self.patch, self.stride)
        return to_map(name, np.asarray(attr))


def resolve(opts: Options, model: Any, params: Any, x: np.ndarray, notes: list[str]) -> tuple:
    """(the methods to run, Grad-CAM's layer or None)."""
    from dlx.explain.methods import model_layers, pick_layer

    wanted = opts.methods or METHODS
    if "occlusion" in wanted:
        occlusion_geometry(opts, *np.shape(x)[1:3])  # a patch larger than the image: say so now
    h, w = np.shape(x)[1:3]
    if opts.faithfulness and (h % opts.faith_patch or w % opts.faith_patch):
        fits = [p for p in range(1, min(h, w) + 1) if h % p == 0 and w % p == 0]
        raise UserError(
            f"--faith-patch {opts.faith_patch} does not tile the {h}x{w} images",
            hint=f"use one of {', '.join(map(str, fits))}",
        )
    layer = None
    if "gradcam" in wanted:
        layers = model_layers(model, params, x)
        if opts.methods is None and opts.layer is None and not any(lay.conv for lay in layers):
            wanted = tuple(m for m in wanted if m != "gradcam")
            notes.append(
                "gradcam: skipped, the model has no 2-D conv layer (--layer PATH names one)"
            )
        else:
            layer = pick_layer(layers, opts.layer)
    elif opts.layer is not None:
        raise UserError(
            "--layer is Grad-CAM's layer, but gradcam is not among --methods",
            hint="add gradcam to --methods, or drop --layer",
        )
    return wanted, layer


def run_suite(
    res: Any,
    model: Any,
    params: Any,
    data: Any,
    x: np.ndarray,
    y: np.ndarray,
    pred: np.ndarray,
    opts: Options,
    wanted: Sequence[str],
    layer: Any,
    done: dict[str, tuple[np.ndarray, float]],
    ig: tuple[float, int],
    title: str,
    arrays: dict,
) -> dict:
    """Maps of every wanted method (`done`: those already computed, with their seconds), then
    faithfulness and the sanity check; writes the figures and summary.json, returns it."""
    from dlx.explain import figures
    from dlx.explain.faithfulness import Faithfulness, patch_ranks
    from dlx.explain.sanity import cascade_params, random_params, spearman

    maker = Maps(model, data, opts, ig, layer)
    maps: dict[str, np.ndarray] = {}
    entry: dict[str, dict[str, Any]] = {}
    for name in wanted:
        t0 = time.perf_counter()
        if name in done:
            attr, seconds = done[name]
            maps[name] = to_map(name, attr)
        else:
            maps[name] = maker(name, params, x, pred)
            seconds = time.perf_counter() - t0
        entry[name] = {"n": len(x), "seconds": round(seconds, 3)}
        arrays[f"map_{name}"] = maps[name]
    if layer is not None:
        entry["gradcam"].update(layer=layer.path, feature_map=list(layer.shape[1:3]))
    patch, stride = maker.patch, maker.stride
    if "occlusion" in maps:
        entry["occlusion"].update(patch=patch, stride=stride, baseline=0.0)
    if "smoothgrad" in maps:
        entry["smoothgrad"].update(noise=opts.noise, sigma=maker.sigma, samples=opts.samples)
    if "integrated_gradients" in maps:
        entry["integrated_gradients"].update(baseline=ig[0], steps=ig[1])
    res.files.append(
        figures.methods_grid(
            res.out_dir / "methods.png",
            x[:SHOWN],
            {k: v[:SHOWN] for k, v in maps.items()},
            SIGNED,
            pred[:SHOWN],
            y[:SHOWN],
            f"attribution maps of the predicted class - {title}",
        )
    )
    summary: dict[str, Any] = {
        "n": len(x),
        "explained": "the predicted class",
        "methods": entry,
    }
    if opts.faithfulness:
        t0 = time.perf_counter()

        def logits(inp):
            return model.apply({"params": params}, inp, train=False)

        faith = Faithfulness(logits, opts.faith_steps, baseline=0.0, patch=opts.faith_patch)
        rnd = faith.random(x, pred, y, opts.random_seeds)
        curves = {}
        for name, m in maps.items():
            t1 = time.perf_counter()
            curves[name] = faith.both(x, patch_ranks(m, opts.faith_patch), pred, y)
            e = entry[name]
            e["deletion_auc"] = curves[name]["deletion"].auc
            e["insertion_auc"] = curves[name]["insertion"].auc
            e["random_deletion_auc"] = rnd["deletion"].auc
            e["random_insertion_auc"] = rnd["insertion"].auc
            e["deletion_vs_random"] = rnd["deletion"].auc - e["deletion_auc"]
            e["insertion_vs_random"] = e["insertion_auc"] - rnd["insertion"].auc
            e["deletion_accuracy_auc"] = curves[name]["deletion"].accuracy_auc
            e["insertion_accuracy_auc"] = curves[name]["insertion"].accuracy_auc
            e["faithfulness_seconds"] = round(time.perf_counter() - t1, 3)
            arrays[f"deletion_{name}"] = curves[name]["deletion"].prob
            arrays[f"insertion_{name}"] = curves[name]["insertion"].prob
        fractions = rnd["deletion"].fractions
        arrays.update(
            faith_fractions=fractions,
            deletion_random=rnd["deletion"].prob,
            insertion_random=rnd["insertion"].prob,
        )
        summary["faithfulness"] = {
            "unit": "pixel"
            if opts.faith_patch == 1
            else f"{opts.faith_patch}x{opts.faith_patch} patch",
            "baseline": 0.0,
            "steps": opts.faith_steps,
            "random_seeds": opts.random_seeds,
            "random_deletion_auc": rnd["deletion"].auc,
            "random_insertion_auc": rnd["insertion"].auc,
            "random_deletion_accuracy_auc": rnd["deletion"].accuracy_auc,
            "random_insertion_accuracy_auc": rnd["insertion"].accuracy_auc,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        if maps:
            best = max(
                maps, key=lambda k: entry[k]["deletion_vs_random"] + entry[k]["insertion_vs_random"]
            )
            summary["faithfulness"]["most_faithful"] = best
            res.notes.append(
                f"faithfulness: {best} is the most faithful (deletion AUC "
                f"{entry[best]['deletion_auc']:.3f} vs random {rnd['deletion'].auc:.3f}, insertion "
                f"{entry[best]['insertion_auc']:.3f} vs {rnd['insertion'].auc:.3f})"
            )
        res.files.append(
            figures.faithfulness_curves(
                res.out_dir / "faithfulness.png",
                fractions,
                {k: (v["deletion"].prob, v["insertion"].prob) for k, v in curves.items()},
                (rnd["deletion"].prob, rnd["insertion"].prob),
                f"deletion / insertion, {len(x)} test examples - {title}",
            )
        )
    if opts.sanity:
        t0 = time.perf_counter()
        try:
            fresh = random_params(model, params, x)
        except Exception as err:  # a user model whose init wants more than x: no check
            res.notes.append(f"sanity check skipped: cannot re-initialise the model ({err})")
            return _totals(summary, entry)
        stages = cascade_params(params, fresh) if opts.cascade else [("all layers", fresh)]
        random_maps = {}
        for stage, p in stages:
            for name in maps:
                t1 = time.perf_counter()
                rmap = maker(name, p, x, pred)
                rho = spearman(maps[name], rmap)
                e = entry[name]
                if stage == "all layers":
                    random_maps[name] = rmap
                    e["rank_correlation_random_model"] = float(rho.mean())
                    e["rank_correlation_random_model_std"] = float(rho.std())
                    rho_abs = spearman(np.abs(maps[name]), np.abs(rmap))
                    e["rank_correlation_random_model_abs"] = float(rho_abs.mean())
                    e["sanity_seconds"] = round(time.perf_counter() - t1, 3)
                    arrays[f"random_map_{name}"] = rmap
                else:
                    e.setdefault("rank_correlation_cascade", {})[stage] = float(rho.mean())
        summary["sanity"] = {
            "check": "model randomisation (Adebayo et al. 2018)",
            "variant": "cascading, from the output layer" if opts.cascade else "all layers",
            "statistic": "Spearman rank correlation of trained vs random-weight maps, "
            "per example over pixels, mean over examples (low = passes); _abs: of |map|",
            "seconds": round(time.perf_counter() - t0, 3),
        }
        res.files.append(
            figures.sanity_grid(
                res.out_dir / "sanity.png",
                x[:SANITY_SHOWN],
                {k: v[:SANITY_SHOWN] for k, v in maps.items()},
                {k: v[:SANITY_SHOWN] for k, v in random_maps.items()},
                {k: entry[k]["rank_correlation_random_model"] for k in random_maps},
                SIGNED,
                f"trained vs randomly initialised weights - {title}",
            )
        )
    return _totals(summary, entry)


def _totals(summary: dict, entry: dict) -> dict:
    for e in entry.values():
        e["seconds_total"] = round(
            sum(e.get(k, 0.0) for k in ("seconds", "faithfulness_seconds", "sanity_seconds")), 3
        )
    return summary


def write_summary(out_dir: Path, summary: dict) -> Path:
    path = out_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path
