"""task=gan (dlx/tasks/gan.py): the Fréchet distance and the class-spread metric on known
inputs, tiny digits GANs end to end through `dlx train` (files, metrics, best checkpoint),
an exact resume after preemption, `dlx sample` and the auto-trained classifier."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from dlx.errors import UserError
from dlx.models.gan import check_image_shape
from dlx.tasks.gan_quality import (
    class_spread,
    classifier_key,
    find_classifier,
    frechet_distance,
    tile,
)

# ---- the metric's arithmetic --------------------------------------------------------------


def gaussian_sample(n: int, mean: np.ndarray, var: np.ndarray, seed: int) -> np.ndarray:
    """n rows whose sample mean is exactly `mean` and sample covariance exactly diag(var)."""
    z = np.random.default_rng(seed).normal(size=(n, len(mean)))
    z -= z.mean(0)
    chol = np.linalg.cholesky(z.T @ z / (n - 1))
    white = np.linalg.solve(chol, z.T).T  # sample covariance: the identity
    return mean + white * np.sqrt(var)


def reference_fd(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's matrix square root."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(sa @ sb).real
    return float(np.square(mu_a - mu_b).sum() + np.trace(sa) + np.trace(sb) - 2 * np.trace(root))


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians() -> None:
    mu1, var1 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 4.0, 0.25, 2.0])
    mu2, var2 = np.array([1.0, 1.0, 0.0, 0.5]), np.array([9.0, 1.0, 0.25, 0.5])
    a, b = gaussian_sample(300, mu1, var1, 0), gaussian_sample(500, mu2, var2, 1)
    # ||mu1 - mu2||^2 + sum (sqrt(var1) - sqrt(var2))^2 = 5 + (4 + 1 + 0 + 0.5)
    want = np.square(mu1 - mu2).sum() + np.square(np.sqrt(var1) - np.sqrt(var2)).sum()
    assert want == pytest.approx(10.5)
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(want, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # Same Gaussian, different draws: small but not 0.
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(2000, 4)), rng.normal(size=(2000, 4))
    assert 0 < frechet_distance(x, y) < 0.02


@pytest.mark.parametrize("dim", [6, 50])  # fewer features than samples (QR path), more
def test_frechet_distance_agrees_with_the_matrix_square_root(dim: int) -> None:
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(40, dim)) @ rng.normal(size=(dim, dim))
    b = rng.normal(size=(30, dim)) * 2 + 1
    assert frechet_distance(a, b) == pytest.approx(reference_fd(a, b), rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-7 * np.trace(np.cov(a.T)))


def test_class_spread_catches_mode_collapse() -> None:
    k, n = 10, 200
    collapsed = np.full((n, k), 0.01)
    collapsed[:, 3] = 0.91
    out = class_spread(collapsed)
    assert out["modes"] == 1 and out["class_entropy"] == 0.0 and out["confident"] == 1.0
    assert out["histogram"] == [0, 0, 0, n, 0, 0, 0, 0, 0, 0]
    even = np.eye(k)[np.arange(n) % k] * 0.5 + 0.05  # every class 20 times, p(max) 0.55
    out = class_spread(even)
    assert out["modes"] == k and out["class_entropy"] == pytest.approx(1.0)
    assert out["confident"] == 0.0
    # Two classes: entropy log 2 / log 10; a class with 1/(2K) of the samples still counts.
    labels = np.r_[np.zeros(100, int), np.ones(90, int), np.full(10, 2)]
    out = class_spread(np.eye(k)[labels])
    assert out["modes"] == 3  # 10 >= 200 / 20
    p = np.array([100, 90, 10]) / 200
    assert out["class_entropy"] == pytest.approx(-(p * np.log(p)).sum() / math.log(k))


def test_image_shapes_and_grid() -> None:
    assert check_image_shape((28, 28, 1)) == (28, 28, 1)
    assert check_image_shape((8, 8, 1)) == (8, 8, 1)
    for bad in [(10, 10, 1), (28, 30, 3), (40,), (28, 28)]:
        with pytest.raises(UserError):
            check_image_shape(bad)
    grid = tile(np.zeros((5, 4, 4, 1)))  # 3 columns, 2 rows, 1-px white borders
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1, 1)
    assert grid.sum() == grid.size - 5 * 16  # everything but the 5 black images
    base = {"name": "digits", "val_size": 0.1, "batch_size": 64, "verify": True}
    key = classifier_key(base, "cnn_small")
    assert classifier_key({**base, "val_size": 0.2}, "cnn_small") != key  # other images
    assert classifier_key(base, "cnn") != key
    same = {**base, "batch_size": 8, "limit_train": 100, "normalize": False, "verify": False}
    assert classifier_key(same, "cnn_small") == key  # the classifier's own, or no image change


# ---- runs ---------------------------------------------------------------------------------

TINY = (  # 20 steps per digits epoch; seconds per run
    "model.g_features=8",
    "model.d_features=8",
    "task.latent_dim=16",
    "task.samples=100",
    "trainer.progress=none",
)


@pytest.fixture(scope="module")
def classifier(cli, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gan-classifier")
    out = cli("train", "recipe=digits", "trainer.max_steps=30", f"outputs.dir={root}")
    assert out.exit_code == 0, out.output
    (run,) = (root / "digits").iterdir()
    return run


def _gan_overrides(out: Path, classifier: Path, *extra: str) -> list[str]:
    return [
        "recipe=gan",
        "data=digits",
        f"task.classifier={classifier}",
        f"outputs.dir={out}",
        *TINY,
        *extra,
    ]


@pytest.fixture(scope="module")
def gan_run(cli, classifier: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gan")
    out = cli("train", *_gan_overrides(root, classifier, "trainer.max_steps=40"))
    assert out.exit_code == 0, out.output
    (run,) = (root / "gan").iterdir()
    return run


def test_gan_run_writes_samples_metrics_and_a_best_checkpoint(gan_run: Path) -> None:
    from dlx.track.metrics import read_metrics

    summary = json.loads((gan_run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["task"] == "gan"
    assert summary["steps"] == 40 and summary["epochs"] == 2
    for epoch in (1, 2):
        png = gan_run / "plots" / f"samples_{epoch}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    evals = [r for r in read_metrics(gan_run / "metrics.jsonl") if "val/fid" in r]
    assert [r["epoch"] for r in evals] == [1, 2]
    for r in evals:
        assert math.isfinite(r["val/fid"]) and r["val/fid"] > 0
        assert 0 <= r["val/confident"] <= 1 and 0 <= r["val/class_entropy"] <= 1
        assert 1 <= r["val/modes"] <= 10
        assert r["val/loss"] == pytest.approx(r["val/d_loss"] + r["val/g_loss"])
        assert 0 < r["val/d_real"] < 1 and 0 < r["val/d_fake"] < 1 and r["val/count"] == 144
        hist = json.loads((gan_run / "plots" / f"samples_{r['epoch']}.json").read_text())
        assert sum(hist["histogram"]) == 100 and hist["fid"] == r["val/fid"]
        assert hist["modes"] == r["val/modes"]
    train = [r for r in read_metrics(gan_run / "metrics.jsonl") if "train/loss" in r]
    assert train and all(
        r["train/loss"] == pytest.approx(r["train/d_loss"] + r["train/g_loss"]) for r in train
    )
    # The best checkpoint is the eval with the lowest FID.
    best = min(evals, key=lambda r: r["val/fid"])
    assert summary["best"] == {
        "val/fid": best["val/fid"],
        "step": best["step"],
        "epoch": best["epoch"],
    }
    assert [p.name for p in (gan_run / "checkpoints" / "best").iterdir()] == [str(best["step"])]
    assert summary["tested_checkpoint"] == f"best (step {best['step']})"
    assert "test/d_loss" in summary["test"]
    # The floor: real test images against real val are far closer than 40 steps of GAN.
    quality = json.loads((gan_run / "quality.json").read_text())
    assert quality["feature_dim"] == 64  # recipe=digits' dense layer: the last Dense's input
    assert quality["samples"] == 100
    real = quality["real_test_vs_val"]
    assert real["fid"] < 0.25 * min(r["val/fid"] for r in evals)
    assert sum(real["histogram"]) == 100 and real["modes"] >= 5


def test_dlx_sample_writes_a_png_grid(cli, gan_run: Path, tmp_path: Path) -> None:
    from matplotlib.image import imread

    out = cli("sample", str(gan_run), "--n", "9", "--out", str(tmp_path / "a.png"))
    assert out.exit_code == 0, out.output
    assert out.output.strip() == str(tmp_path / "a.png")
    again = cli("sample", str(gan_run), "--n", "9", "--out", str(tmp_path / "b.png"))
    other = cli("sample", str(gan_run), "--n", "9", "--seed", "1", "--out", str(tmp_path / "c.png"))
    assert again.exit_code == 0 and other.exit_code == 0
    a, b, c = (imread(tmp_path / f"{x}.png") for x in "abc")
    assert a.ndim == 3 and min(a.shape[:2]) >= 500  # a 6-inch figure at 100 dpi
    assert np.array_equal(a, b) and not np.array_equal(a, c)  # the seed picks the noise
    default = cli("sample", str(gan_run), "--latest")
    assert default.exit_code == 0 and (gan_run / "samples.png").is_file()
    text = cli("sample", str(gan_run), "--n", "0")
    assert text.exit_code == 2 and "--n must be at least 1" in text.output


def test_sample_images_are_in_the_unit_range(gan_run: Path) -> None:
    from dlx.sample import load

    run = load(gan_run)
    assert run.task.quality is None  # restored without its classifier
    images = run.task.sample_images(run.state.params, 12, seed=0)
    assert images.shape == (12, 8, 8, 1) and images.min() >= 0 and images.max() <= 1
    assert images.std() > 0


def test_gan_settings_are_checked(cli, tmp_path: Path) -> None:
    out = cli(
        "train", "recipe=gan", "data=digits", "+task.latent_dims=3", f"outputs.dir={tmp_path}"
    )
    assert out.exit_code == 2 and "no setting 'task.latent_dims'" in out.output
    out = cli("train", "recipe=gan", "data=digits", "model=cnn", f"outputs.dir={tmp_path}")
    assert out.exit_code == 2 and "model=dcgan" in out.output
    missing = tmp_path / "nowhere"
    out = cli("train", "recipe=gan", "data=digits", f"task.classifier={missing}",
              f"outputs.dir={tmp_path}")  # fmt: skip
    assert out.exit_code == 2 and "no such run directory" in out.output
    assert not (tmp_path / "gan").exists()  # nothing written for bad input


def test_preempted_gan_run_resumes_exactly(
    classifier: Path, tmp_path: Path, cache_dir: Path, sigterm_after
) -> None:
    """Stopped after step 12 (mid epoch 1, before any eval) and resumed: the same train
    losses, quality metrics and final params as a run that was never stopped."""
    import jax

    from dlx.commands.train import resume_config, train
    from dlx.config import compose
    from dlx.restore import load_run
    from dlx.track.metrics import read_metrics

    def run(out: Path) -> tuple[Path, dict]:
        overrides = _gan_overrides(out, classifier, "trainer.max_steps=30", "trainer.log_every=1")
        return train(compose(overrides), overrides)

    whole_dir, whole = run(tmp_path / "whole")
    with sigterm_after(12):
        cut_dir, cut = run(tmp_path / "cut")
    assert cut["status"] == "preempted" and cut["steps"] == 12
    assert not (cut_dir / "plots" / "samples_1.png").exists()
    cfg, found = resume_config(cut_dir, [])
    _, resumed = train(cfg, [], resume_dir=found)
    assert resumed["status"] == "finished" and resumed["steps"] == whole["steps"] == 30

    def records(d: Path, key: str) -> list:
        return [(r["step"], r[key]) for r in read_metrics(d / "metrics.jsonl") if key in r]

    assert len(records(whole_dir, "train/loss")) == 30
    for key in ("train/loss", "train/d_real", "val/fid", "val/modes", "val/g_loss"):
        assert records(cut_dir, key) == records(whole_dir, key), key
    assert resumed["best"] == whole["best"]
    a, b = (
        jax.tree_util.tree_leaves(load_run(d, kind="latest").state) for d in (cut_dir, whole_dir)
    )
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    for name in ("samples_1.json", "samples_2.json"):
        assert (cut_dir / "plots" / name).read_text() == (whole_dir / "plots" / name).read_text()


def test_auto_classifier_is_trained_once_and_cached(cache_dir: Path) -> None:
    data = {"name": "digits", "val_size": 0.1, "path": None, "batch_size": 7, "limit_train": 5}
    first = find_classifier(data, "cnn_small", timeout=600)
    assert first.is_relative_to(cache_dir / "gan" / "classifiers")
    summary = json.loads((first / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["recipe"] == "cnn_small"
    cfg = (first / "config.yaml").read_text()  # its recipe's batch size, all the training set
    assert "batch_size: 32" in cfg and "limit_train: null" in cfg and "val_size: 0.1" in cfg
    assert summary["test"]["test/accuracy"] > 0.8
    assert find_classifier(data, "cnn_small", timeout=1) == first  # cached: no training
    assert len(list(first.parent.iterdir())) == 1


@pytest.mark.slow  # 12 s: two GAN builds and steps
def test_d_lr_scale_scales_the_discriminator_step_only() -> None:
    """Adam's first update is ~lr * sign(grad) per weight: D's moves scale with d_lr_scale."""
    import jax
    import optax

    from dlx.models.gan import Discriminator, Generator
    from dlx.tasks.gan import Gan

    x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype(np.float32)
    moved = {}
    for scale in (1.0, 0.25):
        task = Gan(Generator((8, 8, 1), 8), Discriminator(8), latent_dim=4, d_lr_scale=scale)
        state = task.init(jax.random.PRNGKey(0), {"x": x[:1]}, optax.adam(1e-3))
        new, metrics = jax.jit(task.train_step, static_argnums=2)(state, {"x": x}, None)
        assert int(new.step) == 1 and np.isfinite(float(metrics["loss"]))
        assert float(metrics["loss"]) == pytest.approx(
            float(metrics["d_loss"]) + float(metrics["g_loss"])
        )
        moved[scale] = {
            part: np.mean(
                [
                    np.abs(np.asarray(a) - np.asarray(b)).mean()
                    for a, b in zip(
                        jax.tree_util.tree_leaves(new.params[part]),
                        jax.tree_util.tree_leaves(state.params[part]),
                        strict=True,
                    )
                ]
            )
            for part in ("generator", "discriminator")
        }
    assert moved[0.25]["discriminator"] / moved[1.0]["discriminator"] == pytest.approx(
        0.25, rel=0.05
    )
    assert moved[0.25]["generator"] / moved[1.0]["generator"] == pytest.approx(1.0, rel=0.05)


def test_gan_without_classifier_has_no_metrics_and_samples_from_latest(cli, tmp_path: Path) -> None:
    out = cli(
        "train", "recipe=gan", "data=digits", "task.classifier=null", "trainer.max_steps=4",
        f"outputs.dir={tmp_path}", *TINY,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    (run,) = (tmp_path / "gan").iterdir()
    assert (run / "plots" / "samples_1.png").is_file()  # the grid is drawn all the same
    assert not (run / "quality.json").exists() and not (run / "plots" / "samples_1.json").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert "val/fid" not in summary["val"] and "val/g_loss" in summary["val"]
    assert not list((run / "checkpoints" / "best").glob("[0-9]*"))  # nothing to rank by
    sampled = cli("sample", str(run), "--n", "4")
    assert sampled.exit_code == 0, sampled.output
    assert (run / "samples.png").is_file()
