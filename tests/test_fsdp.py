"""parallel=fsdp: params and optimizer state sharded over the `data` axis.

On 8 fake CPU devices (a subprocess: the device count is fixed when JAX starts) fsdp gives
the numbers `single` gives for the same global batch, each device holds ~1/8 of the state,
and `dlx train parallel=fsdp` runs; its sharded checkpoint restores onto 2 devices (straight
into fsdp's layout, and by `dlx train resume=`) and onto 1 (`load_run`), with the same params.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fsdp_worker import COMMON, WIDE, _flat  # tests/ is on sys.path under pytest

WORKER = Path(__file__).parent / "fsdp_worker.py"


def _worker(n: int, cache: Path, *args: str) -> None:
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}",
        "JAX_PLATFORMS": "cpu",
        "DLX_CACHE": str(cache),
    }
    proc = subprocess.run(
        [sys.executable, str(WORKER), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def eight(tmp_path_factory, cache_dir) -> dict:
    """The 8-device worker's report (its folder under "out")."""
    out = tmp_path_factory.mktemp("fsdp")
    _worker(8, cache_dir, "eight", str(out))
    return {**json.loads((out / "eight.json").read_text()), "out": out}


@pytest.fixture(scope="module")
def two(eight, cache_dir) -> dict:
    """The 2-device worker, after the 8-device one: reads its checkpoint, resumes its run."""
    _worker(2, cache_dir, "two", str(eight["out"]), eight["run_dir"])
    return json.loads((eight["out"] / "two.json").read_text())


@pytest.fixture(scope="module")
def single_run(eight, cli) -> Path:
    """The CLI run's 12 steps under `single`, here on one device."""
    out = eight["out"] / "single"
    result = cli("train", *COMMON, "parallel=single", "trainer.max_steps=12", f"outputs.dir={out}")
    assert result.exit_code == 0, result.output
    return next((out / "digits").iterdir())


def _params(run_dir: Path | str, step: int | None = None) -> dict[str, np.ndarray]:
    import jax

    from dlx.restore import load_run

    state = load_run(run_dir, kind="latest", step=step).state
    assert all(len(x.sharding.device_set) == 1 for x in jax.tree_util.tree_leaves(state))
    return _flat(state.params)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def test_fsdp_gives_the_numbers_of_single(eight) -> None:
    assert eight["devices"] == 8
    losses = eight["losses"]
    np.testing.assert_allclose(losses["fsdp"], losses["single"], rtol=1e-5, atol=1e-6)
    assert eight["max_param_diff"] < 1e-5, eight["max_param_diff"]
    assert eight["max_param_change"] > 1e-3, "the steps changed the params: not vacuous"


def test_fsdp_holds_an_eighth_of_the_state_per_device(eight) -> None:
    replicated = eight["sharded_placed"]
    assert replicated["per_device_bytes"] == replicated["total_bytes"]  # the baseline
    for layout in (eight["fsdp_placed"], eight["fsdp_after_steps"]):  # steps keep the layout
        assert layout["total_bytes"] == replicated["total_bytes"]
        assert layout["per_device_bytes"] < 0.2 * replicated["per_device_bytes"], layout
        assert layout["sharded"] > 0
    specs = eight["fsdp_specs"]
    assert specs[".params['Dense_0']['kernel']"] == "P('data',)"  # 256 x 256
    assert specs[".opt_state[0].mu['Dense_0']['kernel']"] == "P('data',)"
    assert specs[".params['Conv_1']['kernel']"] == "P(None, None, None, 'data')"
    assert specs[".params['Dense_0']['bias']"] == "P()"  # small: replicated
    assert specs[".step"] == "P()"
    assert "sharded" in eight["fsdp_describe"] and "per device" in eight["fsdp_describe"]
    assert eight["unreplicated_devices"] == 1  # unreplicate: a plain one-device copy


def test_cli_run_under_fsdp_finishes(eight) -> None:
    assert eight["cli_code"] == 0, eight["cli_output"][-2000:]
    assert "fsdp (jit, params + optimizer state sharded) over 8 devices" in eight["cli_output"]
    summary = json.loads((Path(eight["run_dir"]) / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 6


def test_sharded_checkpoint_restores_on_one_device(eight) -> None:
    """Saved by fsdp on 8 devices (each device's shard), read by `load_run`'s shapes-only
    template on this 1-device process: Orbax must not rebuild the writer's 8-device mesh."""
    import jax

    from dlx.checkpoint import RunCheckpoints
    from dlx.config import compose
    from dlx.setup import build

    setup = build(compose([*COMMON, *WIDE]), runtime=False)
    ckpt = RunCheckpoints(eight["out"] / "wide", create=False)
    state, _ = ckpt.restore(setup.template_state(), "latest")
    ckpt.close()
    assert all(len(x.sharding.device_set) == 1 for x in jax.tree_util.tree_leaves(state))
    on_one = _flat(state.params)
    assert _max_diff(on_one, dict(np.load(eight["out"] / "wide_single.npz"))) < 1e-5
    cli_run = _params(eight["run_dir"], step=6)  # the CLI run's own sharded checkpoint
    assert cli_run.keys() and all(np.isfinite(v).all() for v in cli_run.values())


@pytest.mark.slow  # ~20 s more: a second device count and a 12-step reference run
def test_sharded_checkpoint_restores_onto_two_devices(eight, two) -> None:
    assert two["devices"] == 2
    assert two["specs"]["['Dense_0']['kernel']"] == "P('data',)"  # really sharded...
    assert two["device_sets"] == [2]  # ...over both devices (small arrays replicated)
    on_two = dict(np.load(eight["out"] / "wide_on_two.npz"))
    assert _max_diff(on_two, dict(np.load(eight["out"] / "wide_single.npz"))) < 1e-5


@pytest.mark.slow
def test_resume_on_two_devices_continues_the_same_run(eight, two, single_run) -> None:
    """Steps 1-6 under fsdp on 8 devices, 7-12 resumed under fsdp on 2: the losses and the
    final params of 12 steps under single."""
    from dlx.track.metrics import read_metrics

    assert two["cli_code"] == 0, two["cli_output"][-2000:]
    assert "over 2 devices" in two["cli_output"] and "resuming from step 6" in two["cli_output"]
    fsdp_run = Path(eight["run_dir"])

    def losses(run: Path) -> list[float]:
        return [r["train/loss"] for r in read_metrics(run / "metrics.jsonl") if "train/loss" in r]

    assert len(losses(fsdp_run)) == 12
    np.testing.assert_allclose(losses(fsdp_run), losses(single_run), rtol=1e-5, atol=1e-6)
    assert _max_diff(_params(fsdp_run), _params(single_run)) < 1e-5


def test_fsdp_rule() -> None:
    from dlx.training.parallel import P, fsdp_spec

    assert fsdp_spec((128, 64), 8) == P("data")  # the largest dimension
    assert fsdp_spec((64, 256), 8) == P(None, "data")
    assert fsdp_spec((3, 3, 16, 32), 8) == P(None, None, None, "data")
    assert fsdp_spec((100, 64), 8) == P(None, "data")  # the largest that divides
    assert fsdp_spec((64, 64), 8) == P("data")  # a tie: the first
    assert fsdp_spec((64, 10), 8) == P()  # 640 elements: replicated
    assert fsdp_spec((4099,), 8) == P()  # nothing divides
    assert fsdp_spec((), 8) == P() and fsdp_spec((4096,), 1) == P()
    assert fsdp_spec((64, 10), 8, min_size=1) == P("data")


def test_fsdp_across_processes_is_refused(monkeypatch) -> None:
    import jax

    from dlx.errors import UserError
    from dlx.training.parallel import FsdpStrategy

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(UserError, match="parallel=fsdp runs in one process") as err:
        FsdpStrategy(jax.devices())
    assert "parallel=sharded" in err.value.hint
