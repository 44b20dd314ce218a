"""Attributions (saliency, integrated gradients), attention maps and `dlx explain`."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlx.data import Dataset
from dlx.explain import explain_model
from dlx.explain.attention import attention_maps
from dlx.explain.attribution import (
    completeness,
    integrated_gradients,
    logit_score,
    per_step,
    saliency,
)
from dlx.models.cnn import CNN
from dlx.models.rnn import RNNClassifier
from dlx.models.transformer import TransformerClassifier, TransformerLM

PNG = b"\x89PNG\r\n\x1a\n"


def _init(model, x):
    # Jitted: initialising op by op compiles every op on its own, several times slower.
    return jax.jit(model.init)(jax.random.PRNGKey(0), jnp.asarray(x))["params"]


@pytest.fixture(scope="module")
def tf_cls():
    model = TransformerClassifier(num_classes=3, d_model=8, layers=2, heads=2, max_len=16)
    return model, _init(model, np.zeros((1, 10, 1), np.float32))


@pytest.fixture(scope="module")
def tf_lm():
    model = TransformerLM(num_classes=11, d_model=8, layers=1, heads=2, max_len=16)
    return model, _init(model, np.ones((1, 10), np.int32))


@pytest.fixture(scope="module")
def tiny_cnn():
    model = CNN(num_classes=3, features=(4, 8), dense=16, dropout=0.0)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
    return model, _init(model, x), x


def test_integrated_gradients_completeness(tiny_cnn) -> None:
    """Attributions sum to f(x) - f(baseline), f measured straight from the model."""
    model, params, x = tiny_cnn
    target = np.array([0, 1, 2, 1])
    baseline = -1.0
    attr = integrated_gradients(logit_score(model.apply, params), x, target, baseline, steps=256)
    assert attr.shape == x.shape

    def f(inp):
        logits = model.apply({"params": params}, jnp.asarray(inp), train=False)
        return np.asarray(logits)[np.arange(len(x)), target]

    delta = f(x) - f(np.full_like(x, baseline))
    sums = attr.reshape(len(x), -1).sum(-1)
    assert np.abs(delta).min() > 1e-3  # a meaningful check, not 0 == 0
    np.testing.assert_allclose(sums, delta, rtol=0.01, atol=1e-3)
    got_sums, got_delta = completeness(logit_score(model.apply, params), x, target, baseline, attr)
    np.testing.assert_allclose(got_sums, sums, rtol=1e-5)
    np.testing.assert_allclose(got_delta, delta, rtol=1e-4, atol=1e-5)


def test_linear_model_attributions_are_exact() -> None:
    """f(x) = w . x: saliency is w, integrated gradients (x - b) * w, for any step count."""
    w = np.arange(12, dtype=np.float32).reshape(2, 3, 2) - 5.0

    def score(x, target):
        return (x * w).reshape(len(x), -1).sum(-1) * (target + 1)

    x = np.random.default_rng(1).normal(size=(2, 2, 3, 2)).astype(np.float32)
    target = np.array([0, 2])
    scale = (target + 1)[:, None, None, None]
    np.testing.assert_allclose(saliency(score, x, target), np.broadcast_to(w, x.shape) * scale)
    ig = integrated_gradients(score, x, target, 0.5, steps=3)
    np.testing.assert_allclose(ig, (x - 0.5) * w * scale, rtol=1e-5, atol=1e-6)
    assert per_step(ig).shape == (2, 2)


def test_saliency_has_the_input_shape(tiny_cnn) -> None:
    model, params, x = tiny_cnn
    grad = saliency(logit_score(model.apply, params), x, np.zeros(len(x), np.int32))
    assert grad.shape == x.shape and np.abs(grad).sum() > 0


def test_attention_maps_are_the_attention_weights(tf_cls, tf_lm) -> None:
    model, params = tf_cls
    x = np.random.default_rng(0).normal(size=(2, 6, 1)).astype(np.float32)
    maps = attention_maps(model, params, x)
    assert [m.shape for m in maps] == [(2, 2, 6, 6)] * 2
    np.testing.assert_allclose(maps[0].sum(-1), 1.0, rtol=1e-5)
    assert not np.allclose(maps[0], maps[1])

    lm, lm_params = tf_lm
    tokens = np.array([[3, 5, 7, 2, 0, 0]], np.int32)  # two padding tokens at the end
    (w,) = attention_maps(lm, lm_params, tokens)
    assert w.shape == (1, 2, 6, 6)
    assert np.triu(w[0], k=1).max() == 0  # causal: no query sees a later key
    assert w[0, :, :, 4:].max() == 0  # padding keys get no attention
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)


def test_sown_attention_weights_equal_the_captured_dropout_output(tf_cls) -> None:
    # dlx's SelfAttention sows its weights; the capture fallback (for modules that don't)
    # must read the same numbers from the attention dropout.
    from dlx.explain.attention import SOWN, _is_attention_dropout, _leaves

    model, params = tf_cls
    x = np.random.default_rng(1).normal(size=(2, 6, 1)).astype(np.float32)
    _, state = model.apply(
        {"params": params},
        x,
        train=False,
        capture_intermediates=_is_attention_dropout,
        mutable=["intermediates"],
    )
    leaves = _leaves(state["intermediates"])
    sown = [np.asarray(v[0]) for p, v in leaves if SOWN in p]
    captured = [np.asarray(v[0]) for p, v in leaves if p[-1] == "__call__"]
    assert len(sown) == len(captured) == 2
    for s, c in zip(sown, captured, strict=True):
        np.testing.assert_array_equal(s, c)


def _seq_data(task: str = "classify", tokens: bool = False) -> Dataset:
    rng = np.random.default_rng(0)
    if tokens:
        x = rng.integers(1, 9, size=(4, 10)).astype(np.int32)
        y, shape, vocab = np.roll(x, -1, 1), (10,), tuple("_abcdefghi ")
    else:
        x = rng.normal(size=(4, 10, 1)).astype(np.float32)
        y, shape, vocab = np.array([0, 1, 2, 1], np.int32), (10, 1), None
    return Dataset("fake", x, y, x, y, x, y, 11 if tokens else 3, shape, "test", task, vocab)


def test_explain_sequence_models(tmp_path: Path, tf_lm) -> None:
    data = _seq_data()
    rnn = RNNClassifier(num_classes=3, hidden=8)
    out = explain_model(rnn, _init(rnn, data.x_test), data, tmp_path / "rnn", n=3, steps=16)
    assert [p.name for p in out.files] == ["time_attribution.png"]
    assert out.files[0].read_bytes()[:8] == PNG
    arrays = np.load(out.out_dir / "attributions.npz")
    assert arrays["time_attribution"].shape == (3, 10)
    np.testing.assert_allclose(arrays["time_attribution"].sum(1), arrays["ig_sum"], rtol=1e-4)
    np.testing.assert_allclose(arrays["ig_sum"], arrays["ig_delta"], rtol=0.01, atol=1e-3)

    lm_data = _seq_data("lm", tokens=True)
    out = explain_model(*tf_lm, lm_data, tmp_path / "lm")
    assert [p.name for p in out.files] == ["attention_layer0.png"]
    assert np.load(out.out_dir / "attributions.npz")["attention_layer0"].shape == (2, 10, 10)


@pytest.fixture(scope="module")
def digits_run(cli, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("explain")
    args = ("recipe=digits", "trainer.max_steps=30", "data.batch_size=32", "trainer.progress=plain")
    result = cli("train", *args, f"outputs.dir={root}", "logger=[jsonl]")
    assert result.exit_code == 0, result.output
    (run,) = (root / "digits").iterdir()
    return run


def test_dlx_explain_writes_grids(cli, digits_run: Path) -> None:
    only = ("--methods", "saliency,ig", "--no-faithfulness", "--no-sanity")  # as before #17
    result = cli("explain", str(digits_run), "--n", "6", "--steps", "32", *only)
    assert result.exit_code == 0, result.output
    out = digits_run / "explain"
    for name in ("saliency.png", "integrated_gradients.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
        assert name in result.output
    arrays = np.load(out / "attributions.npz")
    assert arrays["x"].shape == arrays["saliency"].shape == (6, 8, 8, 1)
    assert arrays["integrated_gradients"].shape == (6, 8, 8, 1)
    assert arrays["pred"].shape == arrays["true"].shape == (6,)
    np.testing.assert_allclose(arrays["ig_sum"], arrays["ig_delta"], rtol=0.01, atol=1e-3)
    info = json.loads((out / "explain.json").read_text())
    assert info["checkpoint"] == "best" and info["ig_max_relative_gap"] <= 0.01


def test_dlx_explain_errors(cli, tmp_path: Path) -> None:
    result = cli("explain", str(tmp_path / "missing"))
    assert result.exit_code == 2 and "no such run directory" in result.output


def test_dlx_explain_faithfulness_and_sanity(cli, digits_run: Path) -> None:
    """Every method's map, deletion/insertion AUC vs random and the randomisation check land
    in explain/summary.json; the numbers are recomputed here from attributions.npz."""
    result = cli(
        "explain",
        str(digits_run),
        "--n",
        "8",
        "--steps",
        "16",
        "--samples",
        "8",
        "--faith-steps",
        "8",
        "--patch",
        "2",
    )
    assert result.exit_code == 0, result.output
    out = digits_run / "explain"
    for name in ("methods.png", "faithfulness.png", "sanity.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
    summary = json.loads((out / "summary.json").read_text())
    methods = summary["methods"]
    assert list(methods) == [
        "saliency",
        "integrated_gradients",
        "smoothgrad",
        "gradcam",
        "occlusion",
    ]
    assert methods["gradcam"]["layer"] == "Conv_1" and methods["occlusion"]["patch"] == 2
    arrays = np.load(out / "attributions.npz")
    fractions = arrays["faith_fractions"]
    assert fractions.shape == (9,) and fractions[0] == 0 and fractions[-1] == 1
    for name, e in methods.items():
        assert e["n"] == 8 and arrays[f"map_{name}"].shape == (8, 8, 8)
        assert e["deletion_auc"] == pytest.approx(
            np.trapezoid(arrays[f"deletion_{name}"], fractions)
        )
        assert e["random_deletion_auc"] == summary["faithfulness"]["random_deletion_auc"]
        assert e["deletion_vs_random"] == pytest.approx(
            e["random_deletion_auc"] - e["deletion_auc"]
        )
        assert e["seconds_total"] >= e["seconds"] >= 0
    # the sanity check's correlation, straight from the saved maps
    from dlx.explain.sanity import spearman

    for name, e in methods.items():
        a, b = arrays[f"map_{name}"], arrays[f"random_map_{name}"]
        rho = spearman(a, b).mean()
        assert e["rank_correlation_random_model"] == pytest.approx(rho, abs=1e-9)
        try:
            from scipy.stats import spearmanr
        except ImportError:
            continue
        want = np.mean(
            [np.nan_to_num(spearmanr(a[i].ravel(), b[i].ravel())[0]) for i in range(len(a))]
        )
        assert rho == pytest.approx(want, abs=1e-6)
    assert summary["faithfulness"]["most_faithful"] in methods


def test_dlx_explain_bad_options(cli, digits_run: Path) -> None:
    cases = [
        (("--methods", "saliency,gradcams"), "unknown explain method 'gradcams'"),
        (("--patch", "9"), "--patch 9 is larger than the 8x8 images"),
        (("--layer", "Conv_7"), "Conv_0, Conv_1"),
        (("--layer", "Dense_0"), "spatial"),
        (("--noise", "0"), "--noise must be > 0"),
        (("--faith-patch", "3"), "--faith-patch 3 does not tile the 8x8 images"),
        (("--methods", "saliency", "--layer", "Conv_0"), "--layer is Grad-CAM's layer"),
    ]
    for args, text in cases:
        result = cli("explain", str(digits_run), "--n", "2", *args)
        assert result.exit_code == 2, (args, result.output)
        assert text in result.output and "Traceback" not in result.output, result.output
    # a later, narrower run leaves no figure of the earlier one behind
    assert (digits_run / "explain" / "sanity.png").exists()
    result = cli("explain", str(digits_run), "--n", "2", "--methods", "saliency", "--no-sanity")
    assert result.exit_code == 0, result.output
    left = {p.name for p in (digits_run / "explain").iterdir()}
    assert {"saliency.png", "methods.png", "faithfulness.png", "summary.json"} <= left
    assert not {"sanity.png", "integrated_gradients.png"} & left
