"""Sequence models: shapes, padding masks, causality, rotary positions, weight-decay mask."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlx.models import build_model
from dlx.models.attention import SelfAttention, attention_mask, rotate
from dlx.training.optim import make_optimizer

KEY = jax.random.PRNGKey(0)
# Two right-padded token sequences (0 = padding) with 4 and 2 real tokens.
PADDED = jnp.array([[5, 9, 3, 7, 0, 0, 0], [4, 2, 0, 0, 0, 0, 0]])


# Jitted: one compile per shape is much faster than running a scan or a stack of layers
# op by op. Models are frozen dataclasses, so they key the cache.
@functools.cache
def _jitted(model: Any, what: str) -> Any:
    if what == "init":
        return jax.jit(model.init)
    return jax.jit(model.apply, static_argnames="train")


def _init(model: Any, x: jnp.ndarray) -> Any:
    return _jitted(model, "init")(KEY, x)


def _apply(model: Any, params: Any, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    rngs = {"dropout": jax.random.PRNGKey(1)} if train else None
    return _jitted(model, "apply")(params, x, train=train, rngs=rngs)


FLOAT_MODELS = [  # every model on (B, T, F) floats; bidirectional, stacked, both positions
    dict(name="rnn", hidden=8, project=4, dropout=0.2, layers=2),
    dict(name="rnn", cell="lstm", hidden=8, layers=2, bidirectional=True),
    dict(name="cnn1d", features=[4, 4], kernels=[5, 3], dense=8, dropout=0.1),
    dict(name="transformer_cls", d_model=16, heads=2, positions="rotary", pool="cls"),
]


@pytest.mark.parametrize("cfg", FLOAT_MODELS, ids=lambda c: "-".join(map(str, c.values())))
def test_float_sequence_classifiers_shapes_and_dropout(cfg: dict) -> None:
    model = build_model(cfg, num_classes=10)
    x = jax.random.normal(KEY, (3, 12, 2))
    params = _init(model, jnp.zeros((1, 12, 2)))  # the runner inits on one zero example
    out = _apply(model, params, x)
    assert out.shape == (3, 10) and bool(jnp.isfinite(out).all())
    assert not jnp.allclose(out[0], out[1])  # the input matters
    if cfg.get("dropout", 0.1 if "transformer" in cfg["name"] else 0.0) > 0:
        assert not jnp.allclose(_apply(model, params, x, train=True), out)


TOKEN_CLASSIFIERS = [
    dict(name="rnn", hidden=8, vocab_embed=6, vocab_size=10),
    dict(
        name="rnn",
        cell="lstm",
        hidden=8,
        vocab_embed=6,
        vocab_size=10,
        bidirectional=True,
        layers=2,
    ),
    dict(name="transformer_cls", d_model=16, heads=2, vocab_size=10),
    dict(
        name="transformer_cls", d_model=16, heads=2, vocab_size=10, positions="rotary", pool="cls"
    ),
]


@pytest.mark.parametrize("cfg", TOKEN_CLASSIFIERS, ids=lambda c: "-".join(map(str, c.values())))
def test_padding_never_changes_a_classifier_output(cfg: dict) -> None:
    model = build_model(cfg, num_classes=5)
    params = _init(model, jnp.zeros((1, 7)))
    padded = _apply(model, params, PADDED)
    for row, n in ((0, 4), (1, 2)):
        alone = _apply(model, params, PADDED[row : row + 1, :n])  # no padding at all
        np.testing.assert_allclose(padded[row], alone[0], atol=1e-5, rtol=1e-5)
    changed = PADDED.at[0, 3].set(8)  # a real token: the output must move
    assert not jnp.allclose(_apply(model, params, changed)[0], padded[0], atol=1e-4)


def test_attention_ignores_content_at_padding_positions() -> None:
    attn = SelfAttention(heads=2)
    x = jax.random.normal(KEY, (2, 6, 8))
    valid = jnp.array([[True] * 4 + [False] * 2, [True] * 2 + [False] * 4])
    for causal in (False, True):
        mask = attention_mask(valid, causal)
        params = attn.init(KEY, x, mask)
        out = attn.apply(params, x, mask)
        noisy = jnp.where(valid[..., None], x, 100.0 * jax.random.normal(KEY, x.shape))
        out2 = attn.apply(params, noisy, mask)
        np.testing.assert_allclose(out[valid], out2[valid], atol=1e-5)
        # Control: without the mask, the same noise changes the real positions' outputs.
        free = jnp.ones_like(mask)
        assert not jnp.allclose(attn.apply(params, noisy, free)[valid], out[valid], atol=1e-3)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_causal_lm_never_looks_ahead(positions: str) -> None:
    model = build_model(
        {"name": "transformer_lm", "d_model": 16, "heads": 2, "layers": 2, "positions": positions},
        num_classes=12,
    )
    x = jax.random.randint(KEY, (2, 10), 1, 12)
    params = _init(model, jnp.zeros((1, 10)))
    logits = _apply(model, params, x)
    assert logits.shape == (2, 10, 12)
    t = 4
    future = x.at[:, t + 1 :].set(jax.random.randint(jax.random.PRNGKey(7), (2, 5), 1, 12))
    changed = _apply(model, params, future)
    np.testing.assert_allclose(changed[:, : t + 1], logits[:, : t + 1], atol=1e-5)
    assert not jnp.allclose(changed[:, t + 1 :], logits[:, t + 1 :], atol=1e-4)
    # Padding at the end (a split's last chunk) changes nothing before it either.
    padded = x.at[:, 7:].set(0)
    np.testing.assert_allclose(_apply(model, params, padded)[:, :7], logits[:, :7], atol=1e-5)


def test_rotary_scores_depend_only_on_relative_position() -> None:
    q = jax.random.normal(KEY, (1, 1, 1, 8))
    k = jax.random.normal(jax.random.PRNGKey(3), (1, 1, 1, 8))

    def score(m: int, n: int) -> float:
        rq, rk = rotate(q, jnp.array([m])), rotate(k, jnp.array([n]))
        return float((rq * rk).sum())

    assert score(3, 1) == pytest.approx(score(10, 8), rel=1e-4)
    assert score(3, 1) == pytest.approx(score(102, 100), rel=1e-4)
    assert score(3, 1) != pytest.approx(score(1, 3), rel=1e-3)  # direction matters
    np.testing.assert_allclose(rotate(q, jnp.array([0])), q)  # position 0: identity


def test_learned_vs_rotary_positions() -> None:
    cfg = {"name": "transformer_cls", "d_model": 16, "heads": 2, "vocab_size": 10}
    x = jnp.array([[5, 9, 3, 7]])
    swapped = jnp.array([[9, 5, 3, 7]])
    outs = {}
    for positions in ("learned", "rotary"):
        model = build_model({**cfg, "positions": positions}, num_classes=5)
        params = _init(model, jnp.zeros((1, 4)))
        flat = jax.tree_util.tree_leaves_with_path(params)
        names = " ".join(jax.tree_util.keystr(p) for p, _ in flat)
        assert ("pos_embed" in names) == (positions == "learned")
        outs[positions] = _apply(model, params, x)
        # Mean pooling alone is order-blind: either kind of position must make order count.
        assert not jnp.allclose(outs[positions], _apply(model, params, swapped), atol=1e-4)
    too_long = build_model({**cfg, "max_len": 3}, num_classes=5)
    with pytest.raises(ValueError, match="max_len"):
        _init(too_long, jnp.zeros((1, 4)))


def test_weight_decay_skips_norms_and_biases() -> None:
    cfg = {"name": "transformer_lm", "d_model": 16, "heads": 2, "layers": 1}
    params = _init(build_model(cfg, num_classes=8), jnp.zeros((1, 6)))["params"]
    optim = {"name": "adamw", "lr": 1.0, "b1": 0.9, "b2": 0.999, "eps": 1e-8}
    tx, _ = make_optimizer({**optim, "weight_decay": 0.1}, {"name": "constant"}, 10)
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)  # Adam's own update is then 0

    @jax.jit
    def step(params: Any) -> Any:
        updates, _ = tx.update(zero, tx.init(params), params)
        return optax.apply_updates(params, updates)

    new = step(params)
    flat = jax.tree_util.tree_leaves_with_path(params)
    kinds = set()
    for (path, old), fresh in zip(flat, jax.tree_util.tree_leaves(new), strict=True):
        name = jax.tree_util.keystr(path)
        if "LayerNorm" in name or "bias" in name:
            kinds.add("skipped")
            np.testing.assert_array_equal(fresh, old, err_msg=name)
        else:  # kernels, token and position embeddings: decoupled decay, p * (1 - lr * wd)
            kinds.add("decayed")
            np.testing.assert_allclose(fresh, 0.9 * old, rtol=1e-5, err_msg=name)
    assert kinds == {"skipped", "decayed"}


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        ({"name": "rnn", "cell": "rnn"}, "model.cell"),
        ({"name": "transformer_cls", "pool": "max"}, "model.pool"),
        ({"name": "transformer_cls", "positions": "sinusoid"}, "model.positions"),
        ({"name": "transformer_cls", "d_model": 10, "heads": 3}, "divisible"),
        ({"name": "cnn1d", "features": [4, 4], "kernels": [3]}, "model.kernels"),
    ],
)
def test_bad_model_settings_say_which_key(cfg: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        _init(build_model(cfg, num_classes=3), jnp.zeros((1, 6, 1)))
