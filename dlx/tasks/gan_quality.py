"""How good a GAN's samples are, judged by a classifier dlx trained on the same kind of images.

- `frechet_distance`: the Fréchet distance between two feature samples, each taken as a
  Gaussian (the FID of Heusel et al. 2017, with a dlx classifier in place of Inception).
- `class_spread`: the classifier's verdict on the samples: the share it is confident about
  (max probability > 0.9), and the class histogram with its normalised entropy and the
  classes holding at least 1/(2K) of the samples (`modes`): mode collapse drives both down.
- `Judge`: the classifier restored from its run dir, with the features it sees: the input of
  its last Dense layer (for dlx's CNNs: the flattened pooled conv maps of cnn_small, the
  dense hidden layer after ReLU of cnn).
- `find_classifier`: `task.classifier: auto`: a classifier cached under
  <cache>/gan/classifiers/<key>/, trained once in a subprocess (`python -m dlx train`).
- `write_grid`: images as one PNG.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dlx.errors import UserError

CONFIDENT = 0.9  # a sample the classifier gives more than this probability counts as confident


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^1/2) of two samples (rows).

    The trace of the square root is the nuclear norm of A B^T, A and B the centred samples
    scaled by 1/sqrt(n-1) (the non-zero eigenvalues of S_a S_b = A^T A B^T B are the squared
    singular values of A B^T). No matrix square root is taken, so it is exact and cheap when
    features outnumber samples (cnn_small's 5408 features, 2000 samples); when they don't,
    the reduced QR of A and B shrinks A B^T to a d x d matrix with the same singular values.
    """
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Fréchet distance needs at least 2 samples on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca = (a - mu_a) / math.sqrt(len(a) - 1)
    cb = (b - mu_b) / math.sqrt(len(b) - 1)
    if a.shape[1] < min(len(a), len(b)):
        cross = np.linalg.qr(ca, mode="r") @ np.linalg.qr(cb, mode="r").T
    else:
        cross = ca @ cb.T
    root_trace = float(np.linalg.svd(cross, compute_uv=False).sum())
    value = float(np.square(mu_a - mu_b).sum() + np.square(ca).sum() + np.square(cb).sum())
    return max(value - 2.0 * root_trace, 0.0)  # rounding can take an exact 0 below it


def class_spread(probs: np.ndarray) -> dict[str, Any]:
    """Confident share, class histogram, entropy / log K (1 = uniform) and modes of (N, K)
    class probabilities."""
    probs = np.asarray(probs, np.float64)
    n, k = probs.shape
    hist = np.bincount(probs.argmax(1), minlength=k)
    p = hist / max(n, 1)
    nz = p[p > 0]
    entropy = float(-(nz * np.log(nz)).sum() / math.log(k)) if k > 1 else 0.0
    return {
        "confident": float((probs.max(1) > CONFIDENT).mean()),
        "class_entropy": entropy,
        "modes": int((hist >= n / (2 * k)).sum()),
        "histogram": hist.tolist(),
    }


def quality(feats: np.ndarray, probs: np.ndarray, ref_feats: np.ndarray) -> dict[str, Any]:
    """FID of `feats` against the reference, with the class spread of `probs`."""
    return {"fid": frechet_distance(feats, ref_feats), **class_spread(probs)}


class Judge:
    """A dlx classifier run, restored, that scores images in [-1, 1] (the GAN's range)."""

    def __init__(self, run_dir: Path, image_shape: tuple[int, ...]) -> None:
        import jax

        from dlx.restore import load_run

        run = load_run(run_dir, kind="best")
        model = run.model
        if run.task.name != "classify" or model is None:
            raise UserError(
                f"task.classifier={run_dir} is a {run.task.name} run, not a classifier",
                hint="point it at a classification run on the same images (or auto)",
            )
        if tuple(run.data.input_shape) != tuple(image_shape):
            raise UserError(
                f"task.classifier={run_dir} was trained on {tuple(run.data.input_shape)} "
                f"images, the GAN makes {tuple(image_shape)}",
                hint="train the classifier on the same dataset (or use task.classifier=auto)",
            )
        self.run_dir, self.num_classes = run.run_dir, int(run.data.num_classes)
        # The classifier's inputs are its dataset's pixels after its own normalisation: an
        # affine map of [0, 1]. Its training images span that map's image of [0, 1] (every
        # image set here has black and white pixels), so [-1, 1] maps onto [lo, hi].
        self.lo, self.hi = float(run.data.x_train.min()), float(run.data.x_train.max())
        self.params = run.state.params
        self._run = jax.jit(lambda params, x: _features_and_probs(model, params, x))

    def to_input(self, images: np.ndarray) -> np.ndarray:
        return (self.lo + (np.asarray(images) + 1.0) * 0.5 * (self.hi - self.lo)).astype(np.float32)

    def __call__(self, images: np.ndarray, batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """(features, class probabilities) of images in [-1, 1], as float64 numpy."""
        feats, probs = [], []
        for i in range(0, len(images), batch):
            f, p = self._run(self.params, self.to_input(images[i : i + batch]))
            feats.append(np.asarray(f, np.float64))
            probs.append(np.asarray(p, np.float64))
        return np.concatenate(feats), np.concatenate(probs)


def _features_and_probs(model: Any, params: Any, x: Any) -> tuple[Any, Any]:
    """The input of the model's last Dense layer (flattened) and its softmax output.

    Flax's `capture_intermediates` records module outputs only, and in cnn_small the layer
    before the last Dense is no module (ReLU, max-pool and flatten are functions), so the
    Dense's input is taken by intercepting its call instead.
    """
    import flax.linen as nn
    import jax

    inputs: list = []

    def grab(next_fun: Any, args: tuple, kwargs: dict, context: Any) -> Any:
        if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
            inputs.append(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(grab):
        logits = model.apply({"params": params}, x, train=False)
    if not inputs:
        raise UserError("the classifier has no Dense layer to take features from")
    return inputs[-1].reshape(x.shape[0], -1), jax.nn.softmax(logits, -1)


# ---- task.classifier: auto --------------------------------------------------------------

CLASSIFIER_SEED = 0  # one classifier per dataset, whatever the GAN's seed: FIDs compare
# data.* the classifier's run does not take from the GAN's: its recipe's own batch sizes and
# normalisation, and all of the training set (a quick GAN run's limit_train is no reason to
# train a weak judge).
OWN_DATA_KEYS = ("batch_size", "eval_batch_size", "normalize", "limit_train", "limit_eval")
# Passed on but not part of the cache key: how the files are fetched, not what they hold.
FETCH_KEYS = ("download", "timeout", "verify", "cache_dir")


def classifier_data(data_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The GAN's data settings the classifier is trained with (None values left out)."""
    return {k: v for k, v in data_cfg.items() if k not in OWN_DATA_KEYS and v is not None}


def classifier_key(data_cfg: Mapping[str, Any], recipe: str) -> str:
    """The cache folder's name: the dataset and the settings that change its images."""
    keyed = {k: v for k, v in classifier_data(data_cfg).items() if k not in FETCH_KEYS}
    digest = hashlib.sha256(
        json.dumps({"recipe": recipe, "seed": CLASSIFIER_SEED, **keyed}, sort_keys=True).encode()
    ).hexdigest()[:10]
    return f"{data_cfg.get('name')}-{recipe}-{digest}"


def _override(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def finished_run(folder: Path) -> Path | None:
    """The newest finished run under `folder` (any recipe) with a best checkpoint."""
    found = []
    for summary in folder.glob("*/*/summary.json"):
        try:
            status = json.loads(summary.read_text()).get("status")
        except (OSError, ValueError):
            continue
        if status == "finished" and (summary.parent / "checkpoints" / "best").is_dir():
            found.append(summary.parent)
    return max(found, key=lambda p: p.name) if found else None


def find_classifier(data_cfg: Mapping[str, Any], recipe: str, timeout: float) -> Path:
    """The cached classifier for this dataset; trains it first if there is none (once: a
    file lock keeps concurrent runs from training it twice)."""
    import fcntl

    from dlx.config.paths import cache_root

    folder = cache_root() / "gan" / "classifiers" / classifier_key(data_cfg, recipe)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        run = finished_run(folder)
        if run is not None:
            return run
        cmd = [
            sys.executable, "-m", "dlx", "train", f"recipe={recipe}",
            f"data={data_cfg.get('name')}", f"seed={CLASSIFIER_SEED}",
            f"outputs.dir={folder}", "trainer.progress=none",
        ]  # fmt: skip
        for key, value in classifier_data(data_cfg).items():
            if key != "name":
                cmd.append(f"data.{key}={_override(value)}")
        log = folder / "train.log"
        try:
            with open(log, "w") as out:
                out.write(" ".join(cmd) + "\n")
                out.flush()
                proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise UserError(
                f"training the GAN's quality classifier took over {timeout:.0f} s (log: {log})",
                hint="raise task.classifier_timeout, pass task.classifier=<a classifier run "
                "dir>, or task.classifier=null to turn the quality metrics off",
            ) from err
        run = finished_run(folder)
        if proc.returncode != 0 or run is None:
            tail = "\n".join(log.read_text().splitlines()[-5:])
            raise UserError(
                f"training the GAN's quality classifier failed (exit {proc.returncode}; "
                f"log: {log}):\n{tail}",
                hint="pass task.classifier=<a classifier run dir>, or task.classifier=null",
            )
        return run


# ---- pictures ---------------------------------------------------------------------------


def tile(images: np.ndarray, cols: int | None = None, pad: int = 1) -> np.ndarray:
    """(N, H, W, C) images in [0, 1] as one (rows*(H+pad)+pad, cols*(W+pad)+pad, C) array on
    a white background."""
    n, h, w, c = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, c), np.float32)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        out[y : y + h, x : x + w] = img
    return out


def write_grid(images: np.ndarray, path: Path, title: str = "") -> Path:
    """Images in [0, 1] (N, H, W, C) as a near-square grid PNG (Agg canvas: no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grid = np.clip(tile(np.asarray(images, np.float32)), 0.0, 1.0)
    gray = grid.shape[-1] == 1
    fig = Figure(figsize=(6, 6 * grid.shape[0] / grid.shape[1] + (0.4 if title else 0)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 0.94 if title else 1))
    ax.imshow(grid[..., 0] if gray else grid, cmap="gray" if gray else None, vmin=0, vmax=1,
              interpolation="nearest")  # fmt: skip
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
