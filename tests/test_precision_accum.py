"""trainer.grad_accum and trainer.precision (dlx/training/step.py `accumulate`, `to_compute`).

- grad_accum=N is one step on the whole batch: same params and metrics as N=1 (no dropout),
  with ignored labels spread unevenly over the micro-batches (so each micro-batch must be
  divided by the whole batch's count), with the EWC penalty (counted once), for a GAN, and
  under `sharded` and `pmap` on 8 fake CPU devices.
- bf16: the step's dots and convolutions are bf16, the params and optimizer state stay
  float32, the losses stay near fp32's; a CLI run trains with it.
- A batch that does not split is exit 2 with a fix, before anything is written.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlx.models import build_model
from dlx.tasks import Classify, LanguageModel, Regress
from dlx.training.optim import make_optimizer
from dlx.training.parallel import train_step
from dlx.training.step import micro_batches

SGD = {"name": "sgd", "lr": 0.1, "momentum": 0.0, "nesterov": False}  # scale-sensitive (Adam
# would hide a gradient off by a factor N)
STEPS = 3
MLP = build_model({"name": "mlp", "features": [32], "dropout": 0.0}, 3)
_step = jax.jit(train_step, static_argnums=0)


def _data(n: int = 32, regress: bool = False) -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    if regress:
        return {"x": x, "y": (x[:, :2] @ np.array([1.0, -2.0])).astype(np.float32)}
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5)
    # Ignored labels: rows 0, 4, 8 (all in micro-batch 0 of 4) and 6 (micro-batch 2), so the
    # micro-batches hold 5, 8, 7, 8 labels: a per-micro-batch mean would weigh them wrongly.
    y[[0, 4, 8, 6]] = -1
    return {"x": x, "y": y.astype(np.int32)}


def _train(task, batch: dict, optim: dict = SGD, steps: int = STEPS, extra=None):
    tx, _ = make_optimizer(optim, {"name": "constant"}, 10)
    example = {k: v[:1] for k, v in batch.items()}
    state = jax.jit(lambda r, e: task.init(r, e, tx))(jax.random.PRNGKey(0), example)
    if extra is not None:
        state = state.replace(extra=extra(state.params))
    history = []
    for _ in range(steps):
        state, metrics = _step(task, state, batch)
        history.append({k: float(v) for k, v in metrics.items()})
    return state, history


def _max_diff(a, b) -> float:
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return max(float(jnp.abs(x - y).max()) for x, y in pairs)


def _assert_same_run(one, many) -> None:
    (s1, h1), (sn, hn) = one, many
    leaves = zip(
        jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(sn.params), strict=True
    )
    for a, b in leaves:
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
    assert _max_diff(s1.params, jax.tree_util.tree_map(jnp.zeros_like, s1.params)) > 0.05
    for m1, mn in zip(h1, hn, strict=True):
        assert m1.keys() == mn.keys()
        for k in m1:
            assert mn[k] == pytest.approx(m1[k], rel=1e-5, abs=1e-6), k


def test_micro_batches_are_strided() -> None:
    x = np.arange(12)
    parts = np.asarray(micro_batches({"x": x}, 3)["x"])
    np.testing.assert_array_equal(parts, [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]])


@pytest.mark.parametrize("n", [2, 4])
def test_classify_accumulated_equals_one_big_step(n: int) -> None:
    batch = _data()
    _assert_same_run(_train(Classify(MLP), batch), _train(Classify(MLP, grad_accum=n), batch))


def test_regress_accumulated_equals_one_big_step() -> None:
    model = build_model({"name": "mlp", "features": [32], "dropout": 0.0}, 1)
    batch = _data(regress=True)
    _assert_same_run(_train(Regress(model), batch), _train(Regress(model, grad_accum=4), batch))


@pytest.mark.slow  # ~15 s: two transformer steps compiled
def test_lm_accumulated_equals_one_big_step_with_padding() -> None:
    cfg = {"name": "transformer_lm", "d_model": 16, "layers": 1, "heads": 2, "mlp_ratio": 2,
           "dropout": 0.0, "positions": "rotary", "max_len": 16}  # fmt: skip
    model = build_model(cfg, 11)
    rng = np.random.default_rng(1)
    x = rng.integers(1, 11, size=(8, 10)).astype(np.int32)
    y = np.roll(x, -1, axis=1)
    y[::2, 6:] = -1  # padded tail in micro-batch 0 of 2 only
    batch = {"x": x, "y": y}
    _assert_same_run(
        _train(LanguageModel(model), batch), _train(LanguageModel(model, grad_accum=2), batch)
    )


def test_ewc_penalty_counted_once() -> None:
    def penalty(params):  # a real penalty: weights pulled towards 0.5 with weight 1
        return {
            "ewc": {
                "fisher": jax.tree_util.tree_map(jnp.ones_like, params),
                "anchor": jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.5), params),
            }
        }

    batch = _data()
    one = _train(Classify(MLP, ewc_lambda=1.0), batch, extra=penalty)
    four = _train(Classify(MLP, ewc_lambda=1.0, grad_accum=4), batch, extra=penalty)
    assert one[1][0]["penalty"] > 1.0  # the penalty is large: counting it 4x would show
    _assert_same_run(one, four)


def test_dropout_keys_differ_per_micro_batch() -> None:
    """With dropout the accumulated step is a different (but valid) draw, not the same."""
    model = build_model({"name": "mlp", "features": [32], "dropout": 0.5}, 3)
    batch = _data()
    (s1, _), (s2, h2) = _train(Classify(model), batch), _train(Classify(model, grad_accum=2), batch)
    assert np.isfinite(h2[-1]["loss"]) and _max_diff(s1.params, s2.params) > 1e-4


def _gan():
    from dlx.models.gan import Discriminator, Generator
    from dlx.tasks.gan import Gan

    return Gan(Generator((8, 8, 1), 8, True), Discriminator(8), latent_dim=4)


@pytest.mark.slow  # ~30 s: three GAN steps compiled
def test_gan_accumulated_equals_one_big_step_and_trains_in_bf16() -> None:
    from dataclasses import replace

    x = {"x": np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype(np.float32)}
    gan = _gan()
    one, two = _train(gan, x, steps=2), _train(replace(gan, grad_accum=2), x, steps=2)
    assert _max_diff(one[0].params, two[0].params) < 1e-5
    for m1, m2 in zip(one[1], two[1], strict=True):
        for k in m1:
            assert m2[k] == pytest.approx(m1[k], rel=1e-4, abs=1e-6), k
    state, history = _train(replace(gan, precision="bf16", grad_accum=2), x, steps=2)
    assert all(np.isfinite(v) for v in history[-1].values())
    assert {p.dtype for p in jax.tree_util.tree_leaves(state.params)} == {jnp.dtype("float32")}
    assert _max_diff(state.params, two[0].params) > 0  # bf16 really computed differently


# ---- under sharded and pmap, 8 fake CPU devices (a subprocess: the count is fixed at start)

WORKER = """
import json, sys, jax, jax.numpy as jnp, numpy as np
sys.path.insert(0, sys.argv[1])
from test_precision_accum import MLP, SGD, _data
from dlx.tasks import Classify
from dlx.training.optim import make_optimizer
from dlx.training.parallel import make_strategy

assert jax.device_count() == 8
batch, out = _data(64), {}
y = batch["y"]; y[[1, 9, 17, 33]] = -1  # more ignored rows, unevenly over devices too
tx, _ = make_optimizer(SGD, {"name": "constant"}, 10)
for name, accum in (("single", 1), ("sharded", 4), ("pmap", 4), ("pmap", 2)):
    task, strategy = Classify(MLP, grad_accum=accum), make_strategy(name)
    example = {k: v[:1] for k, v in batch.items()}
    state = strategy.place(task.init(jax.random.PRNGKey(0), example, tx))
    losses = []
    for _ in range(3):
        state, m = strategy.train_step(task, state, strategy.batch(batch))
        losses.append(float(m["loss"]))
    leaves = jax.tree_util.tree_leaves(strategy.unreplicate(state).params)
    params = [np.asarray(p).ravel().tolist() for p in leaves]
    out[f"{name}/{accum}"] = {"losses": losses, "params": params}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_accumulation_under_sharded_and_pmap_on_8_devices(cache_dir) -> None:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "JAX_PLATFORMS": "cpu", "DLX_CACHE": str(cache_dir)}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    base = report.pop("single/1")
    for name, run in report.items():
        np.testing.assert_allclose(run["losses"], base["losses"], rtol=1e-5, err_msg=name)
        for a, b in zip(base["params"], run["params"], strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=name)


# ---- bf16 ----------------------------------------------------------------------------------

CNN = build_model({"name": "cnn", "features": [8], "dense": 16, "dropout": 0.0}, 3)


def _lowered(task, batch: dict) -> str:
    tx, _ = make_optimizer(SGD, {"name": "constant"}, 10)
    example = {k: v[:1] for k, v in batch.items()}
    state = jax.eval_shape(lambda: task.init(jax.random.PRNGKey(0), example, tx))
    return _step.lower(task, state, batch).as_text()


def _image_batch() -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8, 8, 1)).astype(np.float32)
    return {"x": x, "y": (x.mean((1, 2, 3)) > 0).astype(np.int32)}


def test_bf16_step_computes_dots_and_convolutions_in_bf16() -> None:
    batch = _image_batch()
    ops = r"stablehlo\.(?:dot_general|convolution)[^\n]*"
    bf16 = re.findall(ops, _lowered(Classify(CNN, precision="bf16"), batch))
    assert bf16 and all("bf16" in line for line in bf16), bf16
    fp32 = _lowered(Classify(CNN), batch)
    assert re.findall(ops, fp32) and "bf16" not in fp32


def test_bf16_attention_softmax_stays_float32() -> None:
    cfg = {"name": "transformer_lm", "d_model": 16, "layers": 1, "heads": 2, "mlp_ratio": 2,
           "dropout": 0.0, "positions": "learned", "max_len": 16}  # fmt: skip
    x = np.ones((4, 10), np.int32)
    text = _lowered(LanguageModel(build_model(cfg, 11), precision="bf16"), {"x": x, "y": x})
    assert re.search(r"stablehlo\.dot_general[^\n]*bf16", text)
    exps = re.findall(r"stablehlo\.exponential[^\n]*", text)
    assert exps and not [e for e in exps if "bf16" in e], exps  # softmax and CE in float32


def test_bf16_keeps_float32_state_and_close_losses() -> None:
    batch = _data()
    adam = {"name": "adam", "lr": 3e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.0}
    s32, h32 = _train(Classify(MLP), batch, adam, steps=5)
    s16, h16 = _train(Classify(MLP, precision="bf16"), batch, adam, steps=5)
    for leaf in jax.tree_util.tree_leaves((s16.params, s16.opt_state)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32, leaf.dtype
    l32, l16 = np.array([h["loss"] for h in h32]), np.array([h["loss"] for h in h16])
    np.testing.assert_allclose(l16, l32, rtol=2e-2)
    assert l16[-1] < l16[0]
    assert _max_diff(s32.params, s16.params) > 0  # really a different computation


# ---- through the config and the CLI --------------------------------------------------------


def test_settings_reach_the_task_and_old_configs_default() -> None:
    from omegaconf import OmegaConf

    from dlx.tasks import step_settings

    cfg = OmegaConf.create({"trainer": {"precision": "bf16", "grad_accum": 4}})
    assert step_settings(cfg) == {"precision": "bf16", "grad_accum": 4}
    old = OmegaConf.create({"trainer": {}})  # a run dir's config from before these keys
    assert step_settings(old) == {"precision": "fp32", "grad_accum": 1}
    assert Classify(MLP) != Classify(MLP, grad_accum=4)  # a different compiled step


def test_cli_bf16_with_accumulation_trains(cli, tmp_path: Path) -> None:
    from dlx.track.metrics import read_metrics

    args = ("recipe=digits", "trainer.precision=bf16", "trainer.grad_accum=2",
            "trainer.max_steps=5", "trainer.log_every=1", "data.batch_size=32",
            "trainer.progress=plain", f"outputs.dir={tmp_path}")  # fmt: skip
    result = cli("train", *args)
    assert result.exit_code == 0, result.output
    (run,) = [p for p in (tmp_path / "digits").iterdir() if p.is_dir()]
    from dlx.restore import load_run

    loaded = load_run(str(run), kind="latest")
    assert (loaded.setup.task.precision, loaded.setup.task.grad_accum) == ("bf16", 2)
    losses = [r["train/loss"] for r in read_metrics(run / "metrics.jsonl") if "train/loss" in r]
    assert len(losses) == 5 and np.isfinite(losses).all()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 5
    assert np.isfinite(summary["test"]["test/accuracy"])


def test_batch_that_does_not_split_is_exit_2_before_writing(cli, tmp_path: Path) -> None:
    result = cli("train", "recipe=digits", "data.batch_size=30", "trainer.grad_accum=4",
                 "trainer.max_steps=2", f"outputs.dir={tmp_path}")  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "trainer.grad_accum=4" in result.output and "data.batch_size=32" in result.output
    assert not (tmp_path / "digits").exists()
