"""`task=gan`: a DCGAN (dlx/models/gan.py) trained through the same engine as any task.

- params {"generator", "discriminator"}, opt_state likewise; `state.tx` is the pair (G's, D's)
  and `state.apply_fn` the generator's apply (what `dlx sample` calls).
- Each step draws z from `step_rng` (resume-safe), updates D on a real and a fake batch, then
  G against the updated D, with the non-saturating loss of Goodfellow et al. 2014:
  d_loss = -log D(x) - log(1 - D(G(z))), g_loss = -log D(G(z)). `loss` (their sum) is what
  the divergence check reads.
- Images: the data's pixel range (min..max of the training images, whatever
  data.normalize did) mapped onto [-1, 1] (the generator's tanh) inside the jitted steps;
  `host_batch` only drops the labels.
- trainer.precision=bf16: both networks compute in bfloat16, losses in float32 (as the
  supervised tasks, dlx/training/step.py `to_compute`); the sample grid and quality metrics
  of `epoch_end` generate in float32. trainer.grad_accum=N: D's gradient, then G's, summed
  over N micro-batches (the same real images and noise rows as the one big batch).
- Eval: D and G losses over the split against noise from a fixed key.
- After each eval (`epoch_end`): a grid of 64 samples from fixed noise in
  plots/samples_<epoch>.png and, with a classifier (`task.classifier`), FID, confident
  share, class entropy and modes of `task.samples` generated images (dlx/tasks/gan_quality.py)
  with the histogram in plots/samples_<epoch>.json; the real-data floor (val vs test) once,
  in quality.json.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dlx.errors import UserError, suggest
from dlx.models.gan import Discriminator, Generator, check_image_shape
from dlx.tasks.base import Task
from dlx.training.step import (
    TrainState,
    accumulate,
    global_sum,
    mean_grads,
    shard_mean,
    step_rng,
    to_compute,
)

SETTINGS = {  # task.* of conf/task/gan.yaml and their defaults
    "latent_dim": 64,
    "d_lr_scale": 1.0,
    "classifier": "auto",
    "classifier_recipe": "cnn_small",
    "classifier_timeout": 1800,
    "samples": 2000,
    "noise_seed": 0,
}
MODEL_SETTINGS = {"g_features": 64, "d_features": 64, "layer_norm": True}  # conf/model/dcgan
GRID = 64  # samples in each epoch's picture
GRID_STREAM, METRIC_STREAM, EVAL_STREAM = 0, 1, 2  # fixed-noise keys: fold_in(noise_seed, s)


def _checked(given: Mapping[str, Any], defaults: dict, prefix: str, what: str) -> dict:
    for key in given:
        if key not in defaults:
            raise UserError(
                f"{what} has no setting '{prefix}{key}'.{suggest(key, defaults)}",
                hint=f"settings: {', '.join(sorted(defaults))}",
            )
    return {**defaults, **given}


@functools.lru_cache(maxsize=8)
def _generate_fn(generator: Generator) -> Any:
    return jax.jit(lambda params, z: generator.apply({"params": params}, z))


@functools.lru_cache(maxsize=4)
def _judge(run_dir: str, image_shape: tuple) -> Any:
    """One restored classifier per process and dir (tests and sweeps run many GANs)."""
    from dlx.tasks.gan_quality import Judge

    return Judge(Path(run_dir), image_shape)


class Quality:
    """The quality metrics' mutable side: the classifier and the real images' features,
    set up on first use (the first eval), not when the task is built, so restoring a run
    (`dlx sample`, `dlx eval`) never loads or trains a classifier."""

    def __init__(self, classifier: Any, settings: dict, data_cfg: dict, data: Any) -> None:
        self.classifier, self.settings, self.data_cfg = classifier, settings, data_cfg
        self.x_val, self.x_test = data.x_val, data.x_test
        self.judge: Any = None
        self.ref: np.ndarray | None = None
        self.real: dict[str, Any] = {}
        self.n = 0

    def setup(self, task: Gan) -> None:
        from dlx.tasks.gan_quality import find_classifier, quality

        if self.classifier == "auto":
            path = find_classifier(
                self.data_cfg,
                str(self.settings["classifier_recipe"]),
                float(self.settings["classifier_timeout"]),
            )
        else:
            path = Path(self.classifier)
        self.judge = _judge(str(Path(path).resolve()), task.generator.image_shape)
        self.n = min(int(self.settings["samples"]), len(self.x_val), len(self.x_test))
        if self.n < 2:
            raise UserError(
                f"the GAN's quality metrics need at least 2 val and test images, have "
                f"{len(self.x_val)} and {len(self.x_test)}",
                hint="raise data.limit_eval, or task.classifier=null",
            )
        self.ref, _ = self.judge(task.to_unit(self.x_val[: self.n]))
        feats, probs = self.judge(task.to_unit(self.x_test[: self.n]))
        self.real = quality(feats, probs, self.ref)

    def score(self, task: Gan, params: Any, epoch: int, step: int, out_dir: Path | None) -> dict:
        from dlx.tasks.gan_quality import quality

        first = self.judge is None
        if first:
            self.setup(task)
        images = task.generate(params, task.noise(self.n, METRIC_STREAM))
        q = quality(*self.judge(images), self.ref)
        if out_dir is not None:
            plots = Path(out_dir) / "plots"
            plots.mkdir(parents=True, exist_ok=True)
            (plots / f"samples_{epoch}.json").write_text(
                json.dumps({"epoch": epoch, "step": step, **q}, indent=1) + "\n"
            )
            if first:  # the floor: the same metrics of real test images against real val
                info = {
                    "classifier": str(self.judge.run_dir),
                    "features": "input of the classifier's last Dense layer",
                    "feature_dim": int(self.ref.shape[1]),
                    "samples": self.n,
                    "real_test_vs_val": self.real,
                }
                (Path(out_dir) / "quality.json").write_text(json.dumps(info, indent=1) + "\n")
        return {k: v for k, v in q.items() if k != "histogram"}


@dataclass(frozen=True)
class Gan(Task):
    generator: Generator
    discriminator: Discriminator
    latent_dim: int = 64
    d_lr_scale: float = 1.0  # D's updates scaled by this (its learning rate, for Adam/SGD)
    lo: float = 0.0  # the data's pixel range, mapped onto [-1, 1]
    hi: float = 1.0
    noise_seed: int = 0
    precision: str = "fp32"  # trainer.precision: the networks' compute dtype
    grad_accum: int = 1  # trainer.grad_accum: micro-batches per update (of D, then of G)
    quality: Quality | None = field(default=None, compare=False, hash=False, repr=False)

    name: ClassVar[str] = "gan"
    best_metric: ClassVar[str] = "val/fid"
    best_mode: ClassVar[str] = "min"
    shown: ClassVar[tuple[str, ...]] = ("d_loss", "g_loss", "d_real", "d_fake")

    # ---- images and noise ----

    def real(self, x: jax.Array) -> jax.Array:
        """Data pixels -> [-1, 1] (in the steps: jnp)."""
        return (x - self.lo) * (2.0 / (self.hi - self.lo)) - 1.0

    def to_unit(self, x: np.ndarray) -> np.ndarray:
        """Data pixels -> [-1, 1] on the host (numpy), as `real`."""
        return ((np.asarray(x, np.float32) - self.lo) * (2.0 / (self.hi - self.lo)) - 1.0).astype(
            np.float32
        )

    def noise(self, n: int, stream: int, seed: int | None = None) -> np.ndarray:
        key = jax.random.fold_in(
            jax.random.PRNGKey(self.noise_seed if seed is None else seed), stream
        )
        return np.asarray(jax.random.normal(key, (n, self.latent_dim)))

    def generate(self, gen_params: Any, z: np.ndarray, batch: int = 500) -> np.ndarray:
        """Generator outputs in [-1, 1] (numpy) for noise `z`."""
        fn = _generate_fn(self.generator)
        return np.concatenate(
            [np.asarray(fn(gen_params, z[i : i + batch])) for i in range(0, len(z), batch)]
        )

    def sample_images(self, params: Any, n: int, seed: int) -> np.ndarray:
        """`n` samples in [0, 1] from noise drawn with `seed` (`dlx sample`)."""
        return (self.generate(params["generator"], self.noise(n, GRID_STREAM, seed)) + 1.0) / 2.0

    # ---- the Task interface ----

    def init(self, rng: Any, example: dict, tx: Any) -> TrainState:
        g_rng, d_rng, rng = jax.random.split(rng, 3)
        z = jnp.zeros((1, self.latent_dim), jnp.float32)
        params = {
            "generator": jax.jit(self.generator.init)(g_rng, z)["params"],
            "discriminator": jax.jit(self.discriminator.init)(d_rng, self.real(example["x"]))[
                "params"
            ],
        }
        tx_d = tx if self.d_lr_scale == 1.0 else optax.chain(tx, optax.scale(self.d_lr_scale))
        opt_state = {
            "generator": tx.init(params["generator"]),
            "discriminator": tx_d.init(params["discriminator"]),
        }
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=opt_state,
            rng=rng,
            extra={},
            apply_fn=self.generator.apply,
            tx=(tx, tx_d),
        )

    def _g(self, params: Any, z: jax.Array) -> jax.Array:
        if self.precision == "fp32":
            return self.generator.apply({"params": params}, z)
        params, z = to_compute((params, z), self.precision)
        return self.generator.apply({"params": params}, z).astype(jnp.float32)

    def _d(self, params: Any, x: jax.Array) -> jax.Array:
        if self.precision == "fp32":
            return self.discriminator.apply({"params": params}, x)
        params, x = to_compute((params, x), self.precision)
        return self.discriminator.apply({"params": params}, x).astype(jnp.float32)

    def train_step(self, state: TrainState, batch: dict, axis: str | None) -> tuple[Any, dict]:
        tx_g, tx_d = state.tx
        real = self.real(batch["x"])
        n_local = real.shape[0]
        count = global_sum(jnp.asarray(n_local, jnp.float32), axis)
        z = jax.random.normal(step_rng(state, axis), (n_local, self.latent_dim))
        gp, dp = state.params["generator"], state.params["discriminator"]
        rows, n = {"real": real, "z": z}, self.grad_accum  # split together into micro-batches

        def d_objective(dp: Any, real: jax.Array, fake: jax.Array) -> tuple[jax.Array, tuple]:
            on_real, on_fake = self._d(dp, real), self._d(dp, fake)
            loss = jax.nn.softplus(-on_real).sum() + jax.nn.softplus(on_fake).sum()
            probs = (jax.nn.sigmoid(on_real).sum(), jax.nn.sigmoid(on_fake).sum())
            return shard_mean(loss, count, axis), probs  # / the whole batch's count

        def d_value_and_grads(part: dict, _: Any) -> tuple:
            fake = jax.lax.stop_gradient(self._g(gp, part["z"]))
            return jax.value_and_grad(d_objective, has_aux=True)(dp, part["real"], fake)

        (d_loss, (d_real, d_fake)), d_grads = accumulate(d_value_and_grads, rows, n)
        d_grads = mean_grads(d_grads, axis)
        updates, d_opt = tx_d.update(d_grads, state.opt_state["discriminator"], dp)
        dp = optax.apply_updates(dp, updates)

        def g_objective(gp: Any, z: jax.Array) -> jax.Array:  # -log D(G(z)), updated D
            return shard_mean(jax.nn.softplus(-self._d(dp, self._g(gp, z))).sum(), count, axis)

        def g_value_and_grads(part: dict, _: Any) -> tuple:
            return jax.value_and_grad(g_objective)(gp, part["z"])

        g_loss, g_grads = accumulate(g_value_and_grads, {"z": z}, n)
        g_grads = mean_grads(g_grads, axis)
        updates, g_opt = tx_g.update(g_grads, state.opt_state["generator"], gp)
        gp = optax.apply_updates(gp, updates)

        d_loss, g_loss = _device_mean(d_loss, axis), _device_mean(g_loss, axis)
        metrics = {
            "loss": d_loss + g_loss,
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_real": global_sum(d_real, axis) / count,
            "d_fake": global_sum(d_fake, axis) / count,
            "d_grad_norm": optax.tree.norm(d_grads),
            "g_grad_norm": optax.tree.norm(g_grads),
        }
        new = state.replace(
            step=state.step + 1,
            params={"generator": gp, "discriminator": dp},
            opt_state={"generator": g_opt, "discriminator": d_opt},
        )
        return new, metrics

    def eval_step(self, state: TrainState, batch: dict, axis: str | None) -> dict:
        real = self.real(batch["x"])
        m = batch["mask"].astype(jnp.float32)
        key = jax.random.fold_in(jax.random.PRNGKey(self.noise_seed), EVAL_STREAM)
        if axis is not None:
            key = jax.random.fold_in(key, jax.lax.axis_index(axis))
        z = jax.random.normal(key, (real.shape[0], self.latent_dim))
        dp = state.params["discriminator"]
        on_real = self._d(dp, real)
        on_fake = self._d(dp, self._g(state.params["generator"], z))
        sums = {
            "real_loss": (jax.nn.softplus(-on_real) * m).sum(),
            "fake_loss": (jax.nn.softplus(on_fake) * m).sum(),
            "g_loss": (jax.nn.softplus(-on_fake) * m).sum(),
            "d_real": (jax.nn.sigmoid(on_real) * m).sum(),
            "d_fake": (jax.nn.sigmoid(on_fake) * m).sum(),
            "count": m.sum(),
        }
        return global_sum(sums, axis)

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(float(sums["count"]), 1.0)
        d_loss = (float(sums["real_loss"]) + float(sums["fake_loss"])) / n
        g_loss = float(sums["g_loss"]) / n
        return {
            "loss": d_loss + g_loss,
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_real": float(sums["d_real"]) / n,
            "d_fake": float(sums["d_fake"]) / n,
            "count": int(sums["count"]),
        }

    def host_batch(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"x": rows["x"]}  # labels unused; scaled to [-1, 1] in the step (see `real`)

    def epoch_end(self, state: TrainState, epoch: int, out_dir: Path | None) -> dict[str, Any]:
        from dlx.tasks.gan_quality import write_grid

        params = jax.device_get(state.params["generator"])
        step = int(jax.device_get(state.step))
        if out_dir is not None:
            grid = (self.generate(params, self.noise(GRID, GRID_STREAM)) + 1.0) / 2.0
            write_grid(grid, Path(out_dir) / "plots" / f"samples_{epoch}.png",
                       f"epoch {epoch}, step {step}")  # fmt: skip
        if self.quality is None:
            return {}
        return self.quality.score(self, params, epoch, step, out_dir)


def _device_mean(x: Any, axis: str | None) -> Any:
    return x if axis is None else jax.lax.pmean(x, axis)


def build_gan(settings: Mapping[str, Any], cfg: Any, data: Any) -> Gan:
    """The Gan task for `data`'s images from the task and model sections of `cfg`."""
    from omegaconf import DictConfig, OmegaConf

    def plain(node: Any) -> dict:
        if isinstance(node, DictConfig):
            return OmegaConf.to_container(node, resolve=True)
        return dict(node or {})

    s = _checked(settings, SETTINGS, "task.", "task 'gan'")
    model = plain(cfg.get("model"))
    name = model.pop("name", None)
    if name != "dcgan":
        raise UserError(
            f"task=gan trains model=dcgan, not model={name}",
            hint="use recipe=gan, or add model=dcgan",
        )
    m = _checked(model, MODEL_SETTINGS, "model.", "model 'dcgan'")
    shape = check_image_shape(tuple(data.input_shape))
    if not np.issubdtype(data.x_train.dtype, np.floating) or len(data.x_train) == 0:
        raise UserError(f"task=gan needs float images; {data.name} has {data.x_train.dtype}")
    lo, hi = float(data.x_train.min()), float(data.x_train.max())
    if not hi > lo:
        raise UserError(f"the training images of {data.name} are constant ({lo}): nothing to learn")
    for key in ("latent_dim", "samples"):
        if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < 1:
            raise UserError(
                f"task.{key} must be a positive integer, got {s[key]!r}",
                hint=f"e.g. task.{key}={ {'latent_dim': 64, 'samples': 1000}[key] }",
            )
    if not float(s["d_lr_scale"]) > 0:
        raise UserError(
            f"task.d_lr_scale must be positive, got {s['d_lr_scale']!r}",
            hint="e.g. task.d_lr_scale=1.0",
        )
    quality = None
    if s["classifier"] not in (None, "null", "none", False):
        classifier = s["classifier"]
        if classifier != "auto":
            from dlx.restore import find_run_dir

            classifier = find_run_dir(str(classifier))  # a clear error before anything runs
        quality = Quality(classifier, s, plain(cfg.data), data)
    return Gan(
        generator=Generator(shape, int(m["g_features"]), bool(m["layer_norm"])),
        discriminator=Discriminator(int(m["d_features"])),
        latent_dim=int(s["latent_dim"]),
        d_lr_scale=float(s["d_lr_scale"]),
        lo=lo,
        hi=hi,
        noise_seed=int(s["noise_seed"]),
        quality=quality,
    )
