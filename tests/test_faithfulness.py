"""SmoothGrad, Grad-CAM, occlusion, deletion/insertion faithfulness and the randomisation check."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlx.data import Dataset
from dlx.errors import UserError
from dlx.explain import explain_model
from dlx.explain.faithfulness import Faithfulness, pixel_ranks
from dlx.explain.methods import (
    gradcam,
    gradcam_fn,
    layer_apply,
    model_layers,
    occlusion,
    pick_layer,
    smoothgrad,
)
from dlx.explain.sanity import cascade_params, random_params, rankdata, spearman
from dlx.explain.suite import Options, parse_methods
from dlx.models.cnn import CNN


def _init(model, x):
    return jax.jit(model.init)(jax.random.PRNGKey(0), jnp.asarray(x))["params"]


@pytest.fixture(scope="module")
def tiny_cnn():
    model = CNN(num_classes=3, features=(4, 8), dense=16, dropout=0.0)
    x = np.random.default_rng(0).normal(size=(5, 8, 8, 1)).astype(np.float32)
    return model, _init(model, x), x


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(6, (3, 3))(x))


class UserNet(nn.Module):
    """A user's own model: convs nested in blocks, nothing written for Grad-CAM."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = Block()(x)
        x = nn.avg_pool(Block()(x), (2, 2), (2, 2))
        return nn.Dense(3)(x.mean((1, 2)))


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(3)(nn.relu(nn.Dense(8)(x.reshape(len(x), -1))))


def test_faithfulness_of_the_true_map_beats_random() -> None:
    """The model reads only the top-left 3x3 pixels: ranking those first makes deletion drop
    the probability at once and insertion raise it at once, random rankings slowly."""
    rng = np.random.default_rng(0)
    x = (1.0 + rng.random((16, 8, 8, 1))).astype(np.float32)
    known = np.zeros((8, 8), np.float32)
    known[:3, :3] = 1.0

    def logits(inp):
        s = 0.3 * (inp[..., 0] * known).sum((1, 2))
        return jnp.stack([s, jnp.zeros_like(s)], -1)

    target = np.zeros(16, np.int32)
    faith = Faithfulness(logits, steps=16)
    true = faith.both(x, pixel_ranks(np.broadcast_to(known, (16, 8, 8))), target, target)
    rnd = faith.random(x, target, target, seeds=3)
    assert true["deletion"].prob[0] == pytest.approx(rnd["deletion"].prob[0])  # same start
    assert true["deletion"].prob[3] < 0.51  # 12 of 64 pixels gone after 3 of 16 steps: s = 0
    assert true["deletion"].auc < rnd["deletion"].auc - 0.2
    assert true["insertion"].auc > rnd["insertion"].auc + 0.1
    assert true["deletion"].accuracy[0] == 1.0 and true["deletion"].fractions[-1] == 1.0
    # the opposite ranking (known pixels last) is worse than random
    worst = faith.both(x, pixel_ranks(np.broadcast_to(-known, (16, 8, 8))), target, target)
    assert worst["deletion"].auc > rnd["deletion"].auc


def test_pixel_ranks_break_ties_randomly() -> None:
    m = np.zeros((1, 4, 4))
    m[0, 3, 3] = 1.0
    ranks = pixel_ranks(m)
    assert ranks[0, 15] == 0 and sorted(ranks[0]) == list(range(16))
    assert list(ranks[0, :15]) != list(range(1, 16))  # not raster order


def test_gradcam_is_upsampled_from_the_last_conv_feature_map(tiny_cnn) -> None:
    model, params, x = tiny_cnn
    layers = model_layers(model, params, x)
    assert [lay.path for lay in layers if lay.conv] == ["Conv_0", "Conv_1"]
    layer = pick_layer(layers, None)
    assert layer.path == "Conv_1" and layer.shape[1:3] == (4, 4)  # after one 2x2 pool
    target = np.array([0, 1, 2, 0, 1])
    low, high = gradcam(model, params, x, target, layer.path, chunk=2)  # chunked + padded
    assert low.shape == (5, 4, 4) and high.shape == (5, 8, 8)
    assert (low >= 0).all() and low.max() > 0
    up = jax.image.resize(jnp.asarray(low), (5, 8, 8), "bilinear")
    np.testing.assert_allclose(high, up, rtol=1e-5, atol=1e-6)
    whole = gradcam_fn(model, layer.path)(params, jnp.asarray(x), jnp.asarray(target))[0]
    np.testing.assert_allclose(low, whole, rtol=1e-4, atol=1e-6)


def test_gradcam_gradient_is_the_activation_gradient(tiny_cnn) -> None:
    """The zero perturbation leaves the logits alone; its gradient is d logit / d activation:
    moving the activation by t * grad changes the logit by about t * |grad|^2."""
    model, params, x = tiny_cnn
    apply = layer_apply(model, "Conv_1")
    logits, a = apply(params, jnp.asarray(x), None)
    np.testing.assert_allclose(logits, model.apply({"params": params}, x), rtol=1e-5, atol=1e-6)

    def f(eps):
        return apply(params, jnp.asarray(x), eps)[0][:, 0].sum()

    g = jax.grad(f)(jnp.zeros_like(a))
    t = 1e-3
    change = f(t * g) - f(jnp.zeros_like(a))
    assert float(change) == pytest.approx(t * float((g**2).sum()), rel=0.05)


def test_gradcam_on_a_user_model_and_bad_layers() -> None:
    model = UserNet()
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 1)).astype(np.float32)
    params = _init(model, x)
    layers = model_layers(model, params, x)
    convs = [lay.path for lay in layers if lay.conv]
    assert convs == ["Block_0/Conv_0", "Block_1/Conv_0"]
    assert pick_layer(layers, None).path == "Block_1/Conv_0"
    assert pick_layer(layers, "Block_0").shape == (1, 8, 8, 6)  # any spatial module output
    low, high = gradcam(model, params, x, np.array([0, 2]), "Block_0")
    assert low.shape == (2, 8, 8) and high.shape == (2, 8, 8)
    with pytest.raises(UserError) as err:
        pick_layer(layers, "Conv_9")
    assert "Conv_9" in str(err.value) and "Block_0/Conv_0, Block_1/Conv_0" in err.value.hint
    with pytest.raises(UserError) as err:
        pick_layer(layers, "Dense_0")
    assert "spatial" in str(err.value)
    mlp = MLP()
    with pytest.raises(UserError) as err:
        pick_layer(model_layers(mlp, _init(mlp, x), x), None)
    assert "gradcam" in str(err.value) and "--methods" in err.value.hint


def test_occlusion_of_ignored_pixels_is_zero() -> None:
    w = np.random.default_rng(2).normal(size=(2, 2)).astype(np.float32)

    def score(x, target):
        return (x[:, :2, :2, 0] * w).sum((1, 2)) * (target + 1)

    x = np.random.default_rng(3).normal(size=(3, 8, 8, 1)).astype(np.float32)
    target = np.array([0, 1, 0])
    attr = occlusion(score, x, target, patch=2, stride=2)
    assert attr.shape == (3, 8, 8)
    assert np.abs(attr[:, 2:, :]).max() == 0 and np.abs(attr[:, :, 2:]).max() == 0
    drop = (x[:, :2, :2, 0] * w).sum((1, 2)) * (target + 1)  # f(x) - f(patch occluded)
    np.testing.assert_allclose(
        attr[:, :2, :2], np.broadcast_to(drop[:, None, None], (3, 2, 2)), rtol=1e-5, atol=1e-6
    )
    # overlapping patches (stride 1): a pixel gets the mean drop of the patches over it
    attr1 = occlusion(score, x, target, patch=2, stride=1)
    assert np.abs(attr1[:, 3:, :]).max() == 0 and np.abs(attr1[:, :2, :2]).max() > 0


def test_smoothgrad_of_a_linear_model_is_its_weights() -> None:
    w = np.random.default_rng(4).normal(size=(4, 4, 1)).astype(np.float32)

    def score(x, target):
        return (x * w).reshape(len(x), -1).sum(-1)

    x = np.zeros((2, 4, 4, 1), np.float32)
    g = smoothgrad(score, x, np.zeros(2, np.int32), sigma=0.5, samples=11, chunk=4)
    np.testing.assert_allclose(g, np.broadcast_to(w, x.shape), rtol=1e-5)


def test_rank_correlation_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(5)
    a = rng.integers(0, 5, size=(4, 6, 6)).astype(np.float32)  # many ties
    b = a + rng.normal(size=a.shape)
    np.testing.assert_allclose(rankdata(a.reshape(4, -1))[1], stats.rankdata(a[1].ravel()))
    want = [stats.spearmanr(a[i].ravel(), b[i].ravel())[0] for i in range(4)]
    np.testing.assert_allclose(spearman(a, b), want, rtol=1e-6)
    assert spearman(a, a) == pytest.approx(np.ones(4))
    assert spearman(np.zeros((1, 6, 6)), a[:1])[0] == 0.0


def test_random_params_and_cascade(tiny_cnn) -> None:
    model, params, x = tiny_cnn
    fresh = random_params(model, params, x)
    assert jax.tree.structure(fresh) == jax.tree.structure(params)
    assert not np.allclose(fresh["Conv_0"]["kernel"], params["Conv_0"]["kernel"])
    stages = cascade_params(params, fresh)
    assert [s for s, _ in stages] == ["Dense_1+", "Dense_0+", "Conv_1+", "all layers"]
    first = stages[0][1]
    assert first["Dense_1"] is fresh["Dense_1"] and first["Conv_0"] is params["Conv_0"]
    assert all(stages[-1][1][k] is fresh[k] for k in params)


def _images() -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 8, 8, 1)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2], np.int32)
    return Dataset("fake", x, y, x, y, x, y, 3, (8, 8, 1), "test", "classify", None)


def test_explain_model_all_methods_on_an_mlp(tmp_path) -> None:
    """No conv layer: gradcam is left out (with a note) by default, an error when asked for."""
    import json

    data = _images()
    mlp = MLP()
    params = _init(mlp, data.x_test)
    opts = Options(samples=2, faith_steps=4, random_seeds=1, sanity=False)
    out = explain_model(mlp, params, data, tmp_path / "mlp", n=3, steps=8, options=opts)
    summary = json.loads((out.out_dir / "summary.json").read_text())
    assert list(summary["methods"]) == [
        "saliency",
        "integrated_gradients",
        "smoothgrad",
        "occlusion",
    ]
    assert any("gradcam: skipped" in note for note in out.notes)
    for e in summary["methods"].values():
        assert 0 <= e["deletion_auc"] <= 1 and 0 <= e["insertion_auc"] <= 1
    for bad, text in ((Options(methods=("gradcam",)), "gradcam"), (Options(patch=9), "--patch 9")):
        with pytest.raises(UserError) as err:
            explain_model(mlp, params, data, tmp_path / "bad", n=2, options=bad)
        assert text in str(err.value)


def test_parse_methods() -> None:
    assert parse_methods("all") is None
    assert parse_methods("ig, gradcam,ig") == ("integrated_gradients", "gradcam")
    with pytest.raises(UserError) as err:
        parse_methods("saliency,smoothgrads")
    assert "smoothgrad" in str(err.value) and "--methods" in err.value.hint


def test_patch_ranks_move_whole_squares() -> None:
    from dlx.explain.faithfulness import patch_ranks

    m = np.zeros((1, 4, 4))
    m[0, 2:, :2] = 1.0  # the bottom-left 2x2 square first
    ranks = patch_ranks(m, 2).reshape(4, 4)
    assert (ranks[2:, :2] == 0).all() and sorted(np.unique(ranks)) == [0, 1, 2, 3]

    def logits(inp):
        s = inp[:, 2:, :2, 0].sum((1, 2))
        return jnp.stack([s, -s], -1)

    x = np.ones((1, 4, 4, 1), np.float32)
    faith = Faithfulness(logits, steps=4, patch=2)
    curves = faith.both(x, ranks.reshape(1, -1), np.zeros(1, np.int32), np.zeros(1, np.int32))
    np.testing.assert_allclose(curves["deletion"].fractions, [0, 0.25, 0.5, 0.75, 1])
    assert curves["deletion"].prob[1] == pytest.approx(0.5)  # the one square that counts
    assert curves["insertion"].prob[1] == pytest.approx(1 / (1 + np.exp(-8.0)), rel=1e-5)
    rnd = faith.random(x, np.zeros(1, np.int32), np.zeros(1, np.int32), seeds=2)
    assert rnd["deletion"].prob.shape == (5,)
