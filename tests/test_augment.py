"""augment.flip / crop / cutout (dlx/tasks/augment.py): what each does to a batch, that only
train steps see it, and the errors for data it cannot apply to."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from dlx.errors import UserError
from dlx.tasks.augment import Augment


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(64, 10, 12, 2)).astype(np.float32)


def test_flip_mirrors_about_half_of_the_examples(batch: np.ndarray) -> None:
    out = np.asarray(Augment(flip=True)(batch, jax.random.key(1)))
    mirrored = [np.array_equal(o, b[:, ::-1]) for o, b in zip(out, batch, strict=True)]
    kept = [np.array_equal(o, b) for o, b in zip(out, batch, strict=True)]
    assert all(m != k for m, k in zip(mirrored, kept, strict=True))  # each one or the other
    assert 16 <= sum(mirrored) <= 48
    again = np.asarray(Augment(flip=True)(batch, jax.random.key(1)))
    assert np.array_equal(out, again)  # a function of the key: resume draws the same


def test_crop_is_a_window_of_the_edge_padded_image(batch: np.ndarray) -> None:
    k = 2
    out = np.asarray(Augment(crop=k)(batch, jax.random.key(2)))
    padded = np.pad(batch, ((0, 0), (k, k), (k, k), (0, 0)), mode="edge")
    offsets = []
    for o, p in zip(out, padded, strict=True):
        found = [
            (dy, dx)
            for dy in range(2 * k + 1)
            for dx in range(2 * k + 1)
            if np.array_equal(o, p[dy : dy + 10, dx : dx + 12])
        ]
        assert found, "every output is one window of its padded input"
        offsets.append(found[0])
    assert len(set(offsets)) > 10  # offsets differ per example (25 possible)


def test_cutout_zeroes_one_square_and_nothing_else(batch: np.ndarray) -> None:
    s = 4
    out = np.asarray(Augment(cutout=s)(batch, jax.random.key(3)))
    for o, b in zip(out, batch, strict=True):
        changed = np.flatnonzero((o != b).any(axis=-1).reshape(-1))
        rows, cols = np.unravel_index(changed, b.shape[:2])
        assert np.all(o.reshape(-1, 2)[changed] == 0.0)
        assert 1 <= np.ptp(rows) + 1 <= s and 1 <= np.ptp(cols) + 1 <= s  # inside an s x s box
    assert (out == 0).all(axis=-1).sum() >= 64 * 2 * 2  # clipped at borders, never empty


def test_only_train_steps_are_augmented() -> None:
    import optax

    from dlx.models.cnn import CNN
    from dlx.tasks import Classify

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8, 8, 1)).astype(np.float32)
    b = {"x": x, "y": rng.integers(0, 3, 16).astype(np.int32), "mask": np.ones(16, bool)}
    model = CNN(num_classes=3, features=(4,), dense=8, dropout=0.0)
    plain, aug = Classify(model), Classify(model, augment=Augment(flip=True, crop=1))
    state = plain.init(jax.random.key(0), b, optax.sgd(0.1))
    assert plain.eval_step(state, b, None) == aug.eval_step(state, b, None)
    (_, m1), (_, m2) = plain.train_step(state, b, None), aug.train_step(state, b, None)
    assert float(m1["loss"]) != float(m2["loss"])  # the augmented step saw other inputs


def test_settings_that_cannot_apply_are_refused(cli, tmp_path) -> None:
    with pytest.raises(UserError, match="works on images"):
        Augment(flip=True).check((40, 1))
    with pytest.raises(UserError, match="larger than the 8x8"):
        Augment(cutout=9).check((8, 8, 1))
    Augment().check((40, 1))  # all off: nothing to check
    for args, needle in [
        (("recipe=cnn1d", "augment.flip=true"), "works on images"),
        (("recipe=cnn", "augment.crop=-1"), "'augment.crop' must be"),
    ]:
        out = cli("train", *args, "trainer.max_steps=1", f"outputs.dir={tmp_path}")
        assert out.exit_code == 2 and needle in " ".join(out.output.split()), out.output
        assert not any(tmp_path.iterdir())


def test_eval_flip_scores_the_mean_probabilities_of_image_and_mirror() -> None:
    import optax

    from dlx.models.cnn import CNN
    from dlx.tasks import Classify
    from dlx.tasks.supervised import apply_model

    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 8, 8, 1)).astype(np.float32)
    b = {"x": x, "y": rng.integers(0, 3, 16).astype(np.int32), "mask": np.ones(16, bool)}
    model = CNN(num_classes=3, features=(4,), dense=8, dropout=0.0)
    plain, tta = Classify(model), Classify(model, augment=Augment(eval_flip=True))
    state = plain.init(jax.random.key(0), b, optax.sgd(0.1))
    p = jax.nn.softmax(apply_model(model, state.params, b)[0])
    p_mirror = jax.nn.softmax(apply_model(model, state.params, {"x": x[:, :, ::-1]})[0])
    got = jax.nn.softmax(tta.logits(state.params, b))
    np.testing.assert_allclose(got, (p + p_mirror) / 2, rtol=1e-5, atol=1e-7)
    assert not np.allclose(got, p, atol=1e-3)  # the mirror really counted
    hits = int(tta.eval_step(state, b, None)["correct"])
    assert hits == int(((p + p_mirror).argmax(-1) == b["y"]).sum())
    # Train steps are untouched by it: the same loss as without.
    (_, m1), (_, m2) = plain.train_step(state, b, None), tta.train_step(state, b, None)
    assert float(m1["loss"]) == float(m2["loss"])
