"""Runs in a subprocess with fake CPU devices (XLA_FLAGS set by the caller) for
tests/test_fsdp.py; writes what it saw as JSON (and params as .npz) into `out`.

    fsdp_worker.py eight OUT   8 devices: `dlx train ... parallel=fsdp` for 6 steps (saves a
                               sharded checkpoint at step 6), then fsdp against single on
                               the same batches, and the per-device bytes of each layout
    fsdp_worker.py two OUT RUN 2 devices: the sharded checkpoint `eight` saved, read straight
                               into fsdp's 2-device layout; `dlx train resume=RUN` to step 12
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

# The run every part shares: tiny, deterministic (no dropout, constant lr, so a 6-step run
# resumed to 12 steps is the same run as 12 steps at once).
COMMON = [
    "recipe=digits",
    "data.batch_size=64",
    "model.dropout=0.0",
    "schedule=constant",
    "trainer.log_every=1",
    "trainer.progress=plain",
    "trainer.checkpoint_every_steps=6",
]
# Digits with kernels that split 8 ways (4,608 ... 65,536 elements) and few small arrays.
WIDE = ["model.features=[32,64]", "model.dense=256"]


def _cli(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from dlx.cli import app

    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _flat(tree) -> dict[str, np.ndarray]:
    import jax

    return {
        jax.tree_util.keystr(p): np.asarray(v)
        for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def eight(out: Path) -> None:
    import jax

    code, output = _cli(
        "train", *COMMON, "parallel=fsdp", "trainer.max_steps=6", f"outputs.dir={out}"
    )
    report: dict = {"devices": jax.device_count(), "cli_code": code, "cli_output": output}
    report["run_dir"] = str(next((out / "digits").iterdir()))

    from dlx.checkpoint import RunCheckpoints
    from dlx.config import compose
    from dlx.data import epoch_batches
    from dlx.setup import build
    from dlx.training.parallel import fsdp_layout, make_strategy

    setup = build(compose([*COMMON, *WIDE]), runtime=False)
    first = setup.init_state()
    rows = list(epoch_batches(len(setup.data.x_train), 64, seed=0, epoch=0))[:5]
    train = setup.data.arrays("train")
    finals, losses = {}, {}
    # The replicated baseline: what `sharded` places on each device (no steps needed).
    report["sharded_placed"] = fsdp_layout(make_strategy("sharded").place(first))
    for name in ("single", "fsdp"):
        strat = make_strategy(name)
        state = strat.place(first)
        if name == "fsdp":
            report["fsdp_placed"] = fsdp_layout(state)
        losses[name] = []
        for idx in rows:
            batch = setup.task.host_batch({k: v[idx] for k, v in train.items()})
            state, m = strat.train_step(setup.task, state, strat.batch(batch))
            losses[name].append(float(m["loss"]))
        if name == "fsdp":
            # A checkpoint of the sharded state as the loop saves it (`checkpoint_state`).
            ckpt = RunCheckpoints(out / "wide")
            ckpt.save(strat.checkpoint_state(state), {"what": "fsdp, 8 devices"})
            ckpt.wait()
            ckpt.close()
            report["fsdp_after_steps"] = fsdp_layout(state)
            report["fsdp_specs"] = {
                jax.tree_util.keystr(p): str(x.sharding.spec)
                for p, x in jax.tree_util.tree_flatten_with_path(state)[0]
            }
            report["fsdp_describe"] = strat.describe()
            plain = strat.unreplicate(state)
            report["unreplicated_devices"] = max(
                len(x.sharding.device_set) for x in jax.tree_util.tree_leaves(plain)
            )
        finals[name] = _flat(strat.unreplicate(state).params)
    np.savez(out / "wide_single.npz", **finals["single"])
    report["losses"] = losses
    report["max_param_diff"] = max(
        float(np.abs(finals["fsdp"][k] - v).max()) for k, v in finals["single"].items()
    )
    report["max_param_change"] = max(
        float(np.abs(v - finals["single"][k]).max()) for k, v in _flat(first.params).items()
    )
    (out / "eight.json").write_text(json.dumps(report))


def two(out: Path, run: Path) -> None:
    import jax

    from dlx.checkpoint import RunCheckpoints
    from dlx.config import compose
    from dlx.setup import build
    from dlx.training.parallel import make_strategy

    # The 8-device fsdp checkpoint read straight into fsdp's 2-device layout (no one-device
    # copy on the way): a template of shapes that carries the shardings.
    setup = build(compose([*COMMON, *WIDE]), runtime=False)
    strat = make_strategy("fsdp")
    shapes = setup.template_state()
    target = jax.tree_util.tree_map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
        shapes,
        strat.shardings(shapes),
    )
    ckpt = RunCheckpoints(out / "wide", create=False)
    state, _ = ckpt.restore(target, "latest")
    ckpt.close()
    leaves = jax.tree_util.tree_flatten_with_path(state.params)[0]
    report: dict = {
        "devices": jax.device_count(),
        "specs": {jax.tree_util.keystr(p): str(x.sharding.spec) for p, x in leaves},
        "device_sets": sorted(
            {len(x.sharding.device_set) for x in jax.tree_util.tree_leaves(state)}
        ),
    }
    np.savez(out / "wide_on_two.npz", **_flat(state.params))
    # The CLI run (6 steps on 8 devices) resumed here to 12 steps: restored into the
    # one-device template `dlx train` resumes from, then placed over 2 devices.
    code, output = _cli("train", f"resume={run}", "trainer.max_steps=12")
    report.update(cli_code=code, cli_output=output)
    (out / "two.json").write_text(json.dumps(report))


if __name__ == "__main__":
    if sys.argv[1] == "eight":
        eight(Path(sys.argv[2]))
    else:
        two(Path(sys.argv[2]), Path(sys.argv[3]))
