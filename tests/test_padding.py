"""Variable-length sequences: with ``lengths`` every sequence model ignores the padding.

The property: a batch padded to T with garbage (large random values, random token ids) gives,
row by row, the output of each sequence alone at its own length, unpadded; without
``lengths`` the same batch gives something else (so the check is not vacuous). And a jitted
gradient step through each model with ``lengths`` runs and gives finite gradients.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlx.models import build_model

KEY = jax.random.PRNGKey(0)
T = 7
# Odd and even lengths (a stride-2 SAME convolution pads them differently) and length 1.
LENGTHS = (7, 4, 1)
TOL = dict(atol=1e-5, rtol=1e-5)


@functools.cache
def _jitted(model: Any, what: str) -> Any:
    if what == "init":
        return jax.jit(model.init)
    return jax.jit(model.apply, static_argnames="train")


def _apply(model: Any, params: Any, x: jnp.ndarray, lengths: Any = None) -> jnp.ndarray:
    kw = {} if lengths is None else {"lengths": jnp.asarray(lengths, jnp.int32)}
    return _jitted(model, "apply")(params, x, train=False, **kw)


def _real(lengths: tuple[int, ...], t: int) -> jnp.ndarray:
    return jnp.arange(t)[None, :] < jnp.array(lengths)[:, None]


def _float_batch(lengths: tuple[int, ...], t: int, f: int = 2) -> tuple[jnp.ndarray, ...]:
    """(clean, garbage): the same real steps; the padding zero in one, large noise in the other."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(len(lengths) * 100 + t))
    x = jax.random.normal(k1, (len(lengths), t, f))
    real = _real(lengths, t)[..., None]
    noise = 1e3 * jax.random.normal(k2, x.shape) + 500.0
    return jnp.where(real, x, 0.0), jnp.where(real, x, noise)


def _token_batch(lengths: tuple[int, ...], t: int, vocab: int) -> tuple[jnp.ndarray, ...]:
    k1, k2 = jax.random.split(jax.random.PRNGKey(len(lengths) * 100 + t + 1))
    x = jax.random.randint(k1, (len(lengths), t), 1, vocab)  # real tokens: never 0
    real = _real(lengths, t)
    return jnp.where(real, x, 0), jnp.where(real, x, jax.random.randint(k2, x.shape, 1, vocab))


def _init(model: Any, x: jnp.ndarray, lengths: tuple[int, ...]) -> Any:
    """Params as the runner makes them (one example, with its length); they must be the same
    tree as without ``lengths``, so either call can use them."""
    one = jnp.asarray(lengths[:1], jnp.int32)
    params = _jitted(model, "init")(KEY, x[:1], lengths=one)
    plain = jax.eval_shape(model.init, KEY, x[:1])
    shapes = jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), params)
    assert shapes == jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), plain)
    return params


VOCAB = 11
CLASSIFIERS = [  # (config, input kind); tiny, with every variant that handles padding apart
    (dict(name="rnn", hidden=8, project=4, layers=2, dropout=0.1), "float"),
    (dict(name="rnn", cell="lstm", hidden=8, layers=2, bidirectional=True), "float"),
    (dict(name="rnn", hidden=8, vocab_embed=6, vocab_size=VOCAB), "tokens"),
    (
        dict(
            name="rnn", cell="lstm", hidden=8, vocab_embed=6, vocab_size=VOCAB, bidirectional=True
        ),
        "tokens",
    ),
    (dict(name="cnn1d", features=[4, 4], kernels=[5, 3], pool="mean", dropout=0.1), "float"),
    (dict(name="cnn1d", features=[4, 3], kernels=[4, 2], pool="max", dense=8), "float"),
    (dict(name="cnn1d", features=[4], kernels=[3], stride=1, pool="mean"), "float"),
    (dict(name="transformer_cls", d_model=16, heads=2, layers=1), "float"),
    (dict(name="transformer_cls", d_model=16, heads=2, positions="rotary", pool="cls"), "float"),
    (dict(name="transformer_cls", d_model=16, heads=2, layers=1, vocab_size=VOCAB), "tokens"),
    (
        dict(name="transformer_cls", d_model=16, heads=2, vocab_size=VOCAB, positions="rotary"),
        "tokens",
    ),
]


def _ids(case: Any) -> str:
    cfg, kind = case
    return "-".join(map(str, [*cfg.values(), kind]))


def _batch(kind: str, lengths: tuple[int, ...], t: int) -> tuple[jnp.ndarray, ...]:
    return _float_batch(lengths, t) if kind == "float" else _token_batch(lengths, t, VOCAB)


@pytest.mark.parametrize("case", CLASSIFIERS, ids=_ids)
def test_classifier_with_lengths_equals_each_sequence_alone(case: Any) -> None:
    cfg, kind = case
    model = build_model(cfg, num_classes=5)
    clean, garbage = _batch(kind, LENGTHS, T)
    params = _init(model, clean, LENGTHS)
    out = _apply(model, params, garbage, LENGTHS)
    assert out.shape == (len(LENGTHS), 5) and bool(jnp.isfinite(out).all())
    for row, n in enumerate(LENGTHS):
        alone = _apply(model, params, clean[row : row + 1, :n])  # no padding, no lengths
        np.testing.assert_allclose(out[row], alone[0], **TOL, err_msg=f"row {row}, length {n}")
    # Control: without lengths the garbage reaches the output of every padded row.
    blind = _apply(model, params, garbage)
    for row, n in enumerate(LENGTHS):
        if n < T:
            assert not np.allclose(blind[row], out[row], atol=1e-3), f"row {row}"


def test_cnn1d_flatten_head_ignores_padding_content() -> None:
    """pool=flatten has a head of fixed input size, so there is no unpadded run to compare
    with; the padding content still never matters (the head sees zeros there)."""
    model = build_model(dict(name="cnn1d", features=[4, 4], kernels=[5, 3]), num_classes=5)
    clean, garbage = _float_batch(LENGTHS, T)
    params = _init(model, clean, LENGTHS)
    out = _apply(model, params, garbage, LENGTHS)
    np.testing.assert_allclose(_apply(model, params, clean, LENGTHS), out, **TOL)
    other = jnp.where(_real(LENGTHS, T)[..., None], clean, -3e3)
    np.testing.assert_allclose(_apply(model, params, other, LENGTHS), out, **TOL)
    # Full-length rows: the same as without lengths.
    np.testing.assert_allclose(out[0], _apply(model, params, clean)[0], **TOL)
    assert not np.allclose(_apply(model, params, garbage)[1:], out[1:], atol=1e-3)


def test_transformer_patches_real_if_they_hold_a_real_step() -> None:
    """patch=2: whole-patch lengths give the unpadded output; a partial last patch (length 3)
    embeds as if zero-padded to the patch boundary (length 4)."""
    cfg = dict(name="transformer_cls", d_model=16, heads=2, layers=1, patch=2)
    model = build_model(cfg, num_classes=5)
    lengths, t = (8, 4, 3), 8
    clean, garbage = _float_batch(lengths, t)
    params = _init(model, clean, lengths)
    out = _apply(model, params, garbage, lengths)
    for row, n in enumerate(lengths):
        whole = -(-n // 2) * 2
        alone = _apply(model, params, clean[row : row + 1, :whole])  # zeros after n
        np.testing.assert_allclose(out[row], alone[0], **TOL, err_msg=f"length {n}")
    assert not np.allclose(_apply(model, params, garbage)[1:], out[1:], atol=1e-3)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_causal_lm_with_lengths_real_positions_equal_each_sequence_alone(positions: str) -> None:
    cfg = dict(name="transformer_lm", d_model=16, heads=2, layers=2, positions=positions)
    model = build_model(cfg, num_classes=VOCAB)
    clean, garbage = _token_batch(LENGTHS, T, VOCAB)
    params = _init(model, clean, LENGTHS)
    out = _apply(model, params, garbage, LENGTHS)
    assert out.shape == (len(LENGTHS), T, VOCAB) and bool(jnp.isfinite(out).all())
    blind = _apply(model, params, garbage)
    for row, n in enumerate(LENGTHS):
        alone = _apply(model, params, clean[row : row + 1, :n])
        np.testing.assert_allclose(out[row, :n], alone[0], **TOL, err_msg=f"length {n}")
        # The causal mask alone already hides the right padding from real positions: for the
        # LM `lengths` is API uniformity (padding positions carry labels < 0 in the loss).
        np.testing.assert_allclose(blind[row, :n], alone[0], **TOL)
    # Not vacuous: the garbage is there, and moves the (unused) padding positions' logits.
    assert not np.allclose(blind[1, LENGTHS[1] :], out[1, LENGTHS[1] :], atol=1e-3)


GRAD_MODELS = [  # every model class and input kind, with dropout where it has any
    (dict(name="rnn", cell="lstm", hidden=8, layers=2, bidirectional=True, dropout=0.1), "float"),
    (dict(name="rnn", hidden=8, vocab_embed=6, vocab_size=VOCAB), "tokens"),
    (dict(name="cnn1d", features=[4, 4], kernels=[5, 3], pool="mean", dropout=0.1), "float"),
    (dict(name="cnn1d", features=[4, 4], kernels=[5, 3], dense=8, dropout=0.1), "float"),
    (dict(name="transformer_cls", d_model=16, heads=2, layers=1, patch=2), "float"),
    (dict(name="transformer_cls", d_model=16, heads=2, vocab_size=VOCAB, pool="cls"), "tokens"),
    (dict(name="transformer_lm", d_model=16, heads=2, layers=1, positions="rotary"), "tokens"),
]


@pytest.mark.slow  # ~30 s of compiles; the equality test above runs every model by default
@pytest.mark.parametrize("case", GRAD_MODELS, ids=_ids)
def test_jitted_gradient_step_with_lengths_is_finite(case: Any) -> None:
    cfg, kind = case
    lm = cfg["name"] == "transformer_lm"
    model = build_model(cfg, num_classes=VOCAB if lm else 5)
    lengths, t = (8, 5, 2), 8
    clean, garbage = _batch(kind, lengths, t)
    params = _init(model, clean, lengths)
    # Labels: a class per row, or (LM) the next token per position, -1 on the padding.
    y = jnp.where(_real(lengths, t), clean, -1) if lm else jnp.array([0, 3, 4])

    @jax.jit
    def step(params: Any, x: jnp.ndarray, lengths: jnp.ndarray) -> tuple[Any, ...]:
        def loss(params: Any, x: jnp.ndarray) -> jnp.ndarray:
            rngs = {"dropout": jax.random.PRNGKey(1)}
            logits = model.apply(params, x, train=True, rngs=rngs, lengths=lengths)
            logp = jax.nn.log_softmax(logits)
            nll = -jnp.take_along_axis(logp, jnp.maximum(y, 0)[..., None], -1)[..., 0]
            keep = y >= 0
            return jnp.where(keep, nll, 0.0).sum() / keep.sum()

        if kind == "float":
            value, (grads, dx) = jax.value_and_grad(loss, argnums=(0, 1))(params, x)
        else:
            value, grads = jax.value_and_grad(loss)(params, x)
            dx = jnp.zeros(x.shape)
        new = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
        return value, grads, dx, new

    value, grads, dx, new = step(params, garbage, jnp.array(lengths, jnp.int32))
    leaves = jax.tree_util.tree_leaves(grads)
    assert bool(jnp.isfinite(value)) and all(bool(jnp.isfinite(g).all()) for g in leaves)
    assert any(bool((g != 0).any()) for g in leaves)
    assert all(bool(jnp.isfinite(p).all()) for p in jax.tree_util.tree_leaves(new))
    # The padding gets no gradient: nothing there reaches the loss.
    assert bool((dx[~_real(lengths, t)] == 0).all())
