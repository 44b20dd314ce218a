"""Continual learning (dlx/continual): metrics on a hand-built R, reservoir sampling, the EWC
Fisher and penalty, config checks, and tiny digits streams end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dlx.continual import metrics as M
from dlx.continual.replay import ReservoirBuffer
from dlx.errors import UserError

# R[i][j]: accuracy on task j after training tasks 0..i. Task 0 peaks after task 1 (0.95),
# so forgetting (drop from the best) and -BWT (drop from just after training) differ.
R = [
    [0.90, 0.10, 0.00],
    [0.95, 0.80, 0.20],
    [0.50, 0.70, 0.95],
]
INIT = [0.10, 0.05, 0.10]


def test_metrics_on_hand_built_matrix() -> None:
    assert M.average_accuracy(R) == pytest.approx((0.50 + 0.70 + 0.95) / 3)
    assert M.backward_transfer(R) == pytest.approx(((0.50 - 0.90) + (0.70 - 0.80)) / 2)  # -0.25
    assert M.forgetting_per_task(R) == pytest.approx([0.95 - 0.50, 0.80 - 0.70])
    assert M.forgetting(R) == pytest.approx(0.275)
    assert M.forward_transfer(R, INIT) == pytest.approx(((0.10 - 0.05) + (0.20 - 0.10)) / 2)
    assert M.accuracy_after_each_task(R) == pytest.approx([0.90, 0.875, 2.15 / 3])
    # No forgetting at all: BWT and forgetting are 0; one task: both defined as 0.
    no_forget = [[1.0, 0.0], [1.0, 1.0]]
    assert M.backward_transfer(no_forget) == 0.0 and M.forgetting(no_forget) == 0.0
    assert M.summarize([[0.7]])["forgetting"] == 0.0
    assert M.backward_transfer([[0.7]]) == 0.0
    with pytest.raises(ValueError):
        M.average_accuracy([[0.1, 0.2]])


def test_reservoir_keeps_a_uniform_bounded_sample() -> None:
    capacity, n, trials = 50, 1000, 400
    counts = np.zeros(n)
    for trial in range(trials):
        buf = ReservoirBuffer(capacity, (1,), np.float32, seed=trial)
        for start in range(0, n, 37):  # uneven batches: the algorithm is per example
            ids = np.arange(start, min(start + 37, n))
            buf.add(ids[:, None].astype(np.float32), ids.astype(np.int32), task=start // 200)
            assert buf.size == min(buf.seen, capacity)
        kept = buf.y[: buf.size]
        assert len(kept) == capacity and len(set(kept.tolist())) == capacity  # no duplicates
        np.testing.assert_array_equal(buf.x[:, 0], buf.y)  # x, y and task stay together
        np.testing.assert_array_equal(buf.task, np.minimum(buf.y // 37 * 37 // 200, 4))
        counts[kept] += 1
    # Every example is kept with probability capacity / n: 20 of 400 trials each, so each
    # tenth of the stream is kept 2000 times in expectation (sd ~ 44).
    per_tenth = counts.reshape(10, -1).sum(1)
    assert np.all(np.abs(per_tenth - trials * capacity / 10) < 200), per_tenth
    assert counts.mean() == pytest.approx(trials * capacity / n)


def test_reservoir_keeps_everything_until_full_and_samples_blanks_when_empty() -> None:
    buf = ReservoirBuffer(10, (2,), np.float32, seed=0)
    x, y, _ = buf.sample(4)
    assert x.shape == (4, 2) and np.all(y == -1)  # ignored by the loss
    buf.add(np.ones((6, 2), np.float32), np.arange(6, dtype=np.int32), task=0)
    assert sorted(buf.y[:6].tolist()) == list(range(6)) and buf.size == 6
    _, y, t = buf.sample(100)
    assert set(y.tolist()) <= set(range(6)) and np.all(t == 0)


def test_ewc_fisher_and_folded_penalty() -> None:
    import jax
    import jax.numpy as jnp

    from dlx.continual import ewc
    from dlx.models import build_model

    model = build_model({"name": "cnn", "features": [], "dense": 16, "dropout": 0.0}, 10)
    x = np.random.default_rng(0).normal(size=(40, 8, 8, 1)).astype(np.float32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])["params"]
    allowed = np.zeros(10, bool)
    allowed[[2, 3]] = True
    fisher = ewc.fisher_diagonal(model.apply, params, x, allowed, jax.random.PRNGKey(1))
    assert jax.tree_util.tree_structure(fisher) == jax.tree_util.tree_structure(params)
    fisher, params = jax.tree_util.tree_map(np.asarray, (fisher, params))  # no eager jax ops
    for f, p in zip(
        jax.tree_util.tree_leaves(fisher), jax.tree_util.tree_leaves(params), strict=True
    ):
        assert f.shape == p.shape and np.all(f >= 0) and np.all(np.isfinite(f))
    assert sum(f.sum() for f in jax.tree_util.tree_leaves(fisher)) > 0
    # Head mask: classes the task cannot predict get no gradient through their logits.
    assert np.abs(fisher["Dense_1"]["bias"][[0, 1, 4, 5]]).max() == 0.0

    # Two tasks' penalties folded into one: the same function up to a constant.
    def shift(tree: dict, scale: float, add: float) -> dict:
        return jax.tree_util.tree_map(lambda a: a * scale + add, tree)

    p1, p2, f2 = params, shift(params, 1.0, 0.1), shift(fisher, 2.0, 0.01)

    @jax.jit
    def gap(q: dict) -> jax.Array:
        folded = ewc.consolidate(ewc.consolidate(ewc.empty_penalty(q), fisher, p1), f2, p2)
        separate = ewc.penalty_value({"fisher": fisher, "anchor": p1}, q) + ewc.penalty_value(
            {"fisher": f2, "anchor": p2}, q
        )
        return jnp.stack([separate - ewc.penalty_value(folded, q), separate])

    (gap1, sep1), (gap2, sep2) = gap(shift(params, 0.5, 0.0)), gap(shift(params, 1.0, -0.2))
    assert sep1 != pytest.approx(sep2)  # two different points ...
    assert float(gap1) == pytest.approx(float(gap2), rel=1e-3, abs=1e-4)  # ... same offset
    zero = jax.jit(ewc.penalty_value)(ewc.empty_penalty(params), shift(params, 0.5, 0.0))
    assert float(zero) == 0.0


def _overrides(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "recipe=digits",
        "+continual=default",
        "continual.tasks=[[0,1],[2,3],[4,5]]",
        "continual.max_steps_per_task=3",
        "continual.fisher_samples=40",
        "continual.replay_size=64",
        "continual.replay_per_batch=16",
        "data.batch_size=32",
        "model.features=[8]",
        "model.dense=16",
        "trainer.log_every=2",
        "trainer.progress=none",
        f"outputs.dir={tmp_path}",
        *extra,
    ]


def _run(overrides: list[str]) -> tuple[Path, dict]:
    from dlx.commands.train import train
    from dlx.config import compose

    return train(compose(overrides), overrides)


@pytest.mark.parametrize(
    "extra",
    [
        ("continual.strategy=replay", "continual.scenario=task"),
        ("continual.strategy=ewc",),
    ],
)
def test_tiny_digits_stream_end_to_end(tmp_path: Path, cache_dir: Path, extra: tuple) -> None:
    run_dir, summary = _run(_overrides(tmp_path, *extra))
    assert summary["status"] == "finished"
    report = json.loads((run_dir / "continual.json").read_text())
    r = np.asarray(report["R"])
    assert r.shape == (3, 3) and np.all((r >= 0) & (r <= 1))
    assert report["task_names"] == ["0/1", "2/3", "4/5"]
    assert report["average_accuracy"] == pytest.approx(r[-1].mean())
    assert report["backward_transfer"] == pytest.approx(M.backward_transfer(r))
    assert len(report["tasks"]) == 3 and all(t["steps"] == 3 for t in report["tasks"])
    assert (run_dir / "plots" / "continual_heatmap.png").stat().st_size > 1000
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["status"] == "finished" and saved["forgetting"] == report["forgetting"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["task"] for r in records if "test/task0_accuracy" in r] == [0, 1, 2]
    assert any("train/loss" in r for r in records)
    assert (run_dir / "config.yaml").is_file() and (run_dir / "meta.json").is_file()
    if "continual.scenario=task" in extra:  # two classes allowed: at worst chance, never 0
        assert r.min() > 0.0


def test_permuted_stream_end_to_end(tmp_path: Path, cache_dir: Path) -> None:
    run_dir, summary = _run(
        _overrides(
            tmp_path,
            "continual.stream=permuted",
            "continual.tasks=2",
            "trainer.checkpoint=false",
            "data.limit_eval=100",
            "trainer.max_steps=4",  # a budget for the whole stream: 3 steps, then 1
        )
    )
    report = json.loads((run_dir / "continual.json").read_text())
    assert np.asarray(report["R"]).shape == (2, 2) and report["task_names"] == ["perm0", "perm1"]
    assert [t["steps"] for t in report["tasks"]] == [3, 1] and summary["steps"] == 4
    assert summary["status"] == "finished" and not (run_dir / "checkpoints").exists()
    assert summary["test"]["test/accuracy"] == report["average_accuracy"]
    assert summary["test"]["test/count"] == 200


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["continual.strategy=ewcc"], "continual.strategy must be one of"),
        (["continual.tasks=[[0,1],[1,2]]"], "class 1 is in more than one task"),
        (["continual.tasks=[[0,12]]"], "class 12 is not one of"),
        (["continual.tasks=3"], "cannot split 10 classes"),
        (["data.batch_size=400"], "fewer than data.batch_size=400"),
        (["continual.replay_per_batch=0"], "must be positive"),
        (["continual.strategy=gdumb", "continual.replay_size=20"], "GDumb.s memory holds 20"),
        (["init_from=/elsewhere"], "init_from= is not supported for continual runs"),
        (["trainer.grad_accum=7"], "cannot be split into trainer.grad_accum=7"),
    ],
)
def test_bad_input_fails_before_anything_is_written(
    tmp_path: Path, cache_dir: Path, extra: list[str], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        _run(_overrides(tmp_path, *extra))
    assert not any(tmp_path.iterdir())


def test_task_head_mask_and_class_groups() -> None:
    from dlx.continual.config import parse_config
    from dlx.continual.stream import build_stream, class_groups
    from dlx.data import load_dataset

    assert class_groups(5, 10) == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert class_groups([[3], 7], 10) == [(3,), (7,)]
    data = load_dataset({"name": "digits"}, 0)
    task = build_stream(parse_config({"scenario": "task", "tasks": 2}), data, 0, 32)
    assert task.allowed[0].tolist() == [True] * 5 + [False] * 5
    assert set(data.y_train[task.tasks[1].train_idx].tolist()) == {5, 6, 7, 8, 9}
    assert set(task.y_eval[task.tasks[0].eval_idx].tolist()) == {0, 1, 2, 3, 4}
    shared = build_stream(parse_config({"tasks": 2}), data, 0, 32)
    assert shared.allowed.all()
    perm = build_stream(parse_config({"stream": "permuted", "tasks": 3}), data, 0, 32)
    x0, y0 = perm.train_batch(0, np.arange(4))
    x2, y2 = perm.train_batch(2, np.arange(4))
    np.testing.assert_array_equal(y0, y2)
    np.testing.assert_array_equal(np.sort(x0.reshape(4, -1)), np.sort(x2.reshape(4, -1)))
    assert not np.array_equal(x0, x2)
    with pytest.raises(UserError, match=r"unknown config key 'continual\.strategyy'"):
        parse_config({"strategyy": "naive"})


def test_dlx_train_runs_a_continual_recipe(cli, tmp_path) -> None:
    """Through the real CLI: `dlx train` hands a config with `continual` to its own loop."""
    import json

    result = cli(
        "train",
        "recipe=digits",
        "+continual=default",
        "continual.tasks=[[0,1],[2,3]]",
        "trainer.max_steps=6",
        "trainer.progress=plain",
        f"outputs.dir={tmp_path}",
    )
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "digits").iterdir()
    report = json.loads((run / "continual.json").read_text())
    assert len(report["R"]) == 2 and all(len(row) == 2 for row in report["R"])


@pytest.mark.parametrize("strategy", ["replay", "ewc"])
def test_preempted_continual_run_resumes_exactly(
    tmp_path: Path, cache_dir: Path, sigterm_after, strategy: str
) -> None:
    """Preempted in the middle of task 1 (the replay buffer half refilled, EWC's penalty of
    task 0 in the state), resumed: the same R, train losses and final params as a run that
    was never stopped."""
    import signal

    import jax

    from dlx.commands.train import resume_config, train
    from dlx.restore import load_run
    from dlx.track.metrics import read_metrics

    extra = (f"continual.strategy={strategy}", "trainer.log_every=1", "model.dropout=0.3")
    whole_dir, whole = _run(_overrides(tmp_path / "whole", *extra))
    with sigterm_after(4):  # a SIGTERM arriving after step 4
        cut_dir, cut = _run(_overrides(tmp_path / "cut", *extra))
    assert cut["status"] == "preempted" and cut["steps"] == 4
    assert cut["exit_code"] == 128 + signal.SIGTERM
    cfg, run = resume_config(cut_dir, [])
    _, resumed = train(cfg, [], resume_dir=run)
    assert resumed["status"] == "finished" and resumed["steps"] == whole["steps"] == 9

    def losses(d: Path) -> list:
        return [
            (r["step"], r["train/loss"])
            for r in read_metrics(d / "metrics.jsonl")
            if "train/loss" in r
        ]

    assert losses(cut_dir) == losses(whole_dir)  # bit for bit, step by step
    report = {d: json.loads((d / "continual.json").read_text()) for d in (cut_dir, whole_dir)}
    assert report[cut_dir]["R"] == report[whole_dir]["R"]
    a, b = (
        jax.tree_util.tree_leaves(load_run(d, kind="latest").state) for d in (cut_dir, whole_dir)
    )
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("strategy", ["lwf", "si", "agem"])
def test_lwf_si_agem_carry_their_state_across_tasks(
    tmp_path: Path, cache_dir: Path, strategy: str
) -> None:
    """The stream runs end to end, and what each strategy keeps in state.extra changed at the
    task ends: LwF's teacher is the last-but-one task's model with earlier tasks' outputs
    marked old; SI's importance omega is positive where weights moved, its anchor is the
    params at the last task's start (the end of the one before). A-GEM projects some steps'
    gradients once the memory holds earlier tasks, never while it is empty (task 0)."""
    from dlx.restore import load_run

    run_dir, summary = _run(_overrides(tmp_path, f"continual.strategy={strategy}"))
    assert summary["status"] == "finished"
    r = np.asarray(json.loads((run_dir / "continual.json").read_text())["R"])
    assert r.shape == (3, 3)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [x["train/loss"] for x in records if "train/loss" in x]
    assert losses and np.all(np.isfinite(losses))
    state = load_run(run_dir, kind="latest").state
    if strategy == "agem":
        # (step, share of steps projected); task 0 is steps 1-3
        projected = [(x["step"], x["train/projected"]) for x in records if "train/projected" in x]
        assert all(p == 0.0 for step, p in projected if step <= 3)
        assert any(p > 0.0 for step, p in projected if step > 3), projected
        assert all(0.0 <= p <= 1.0 for _, p in projected)
    elif strategy == "lwf":
        old = np.asarray(state.extra["lwf"]["old"])
        np.testing.assert_array_equal(np.flatnonzero(old), [0, 1, 2, 3])
        teacher = jax_leaves(state.extra["lwf"]["params"])
        assert any(
            not np.allclose(a, b) for a, b in zip(teacher, jax_leaves(state.params), strict=True)
        )
    else:
        si = state.extra["si"]
        omega = jax_leaves(si["omega"])
        assert all(np.all(o >= 0) for o in omega) and sum(o.sum() for o in omega) > 0
        assert any(
            not np.allclose(a, b)
            for a, b in zip(jax_leaves(si["anchor"]), jax_leaves(state.params), strict=True)
        )
        assert sum(np.abs(w).sum() for w in jax_leaves(si["w"])) > 0  # this task's, unfolded


def jax_leaves(tree: object) -> list:
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_gdumb_memory_is_greedy_class_balanced_and_bounded() -> None:
    from dlx.continual.gdumb import class_balanced_memories

    y = np.repeat(np.arange(6), [300, 300, 50, 300, 300, 300])  # class 2 is rare
    tasks = [np.flatnonzero(np.isin(y, g)) for g in ([0, 1], [2, 3], [4, 5])]
    memories = class_balanced_memories(tasks, y, 240, seed=0)
    sizes = [len(rows) for _, rows in memories]
    assert sizes == [240, 240, 240]  # full from the first task on, never over
    counts = [np.bincount(y[rows], minlength=6) for _, rows in memories]
    np.testing.assert_array_equal(counts[0], [120, 120, 0, 0, 0, 0])
    # Task 1: the share is 240 / 4 = 60; class 2 keeps all 50 of its examples, class 3 its
    # 60, each joining by evicting from the largest class (0 and 1 in turn).
    np.testing.assert_array_equal(counts[1], [65, 65, 50, 60, 0, 0])
    np.testing.assert_array_equal(counts[2], [40, 40, 40, 40, 40, 40])  # 240 / 6 each
    for t, (task_ids, rows) in enumerate(memories):
        assert len(set(rows.tolist())) == len(rows)  # no example twice
        assert set(task_ids.tolist()) <= set(range(t + 1))
        np.testing.assert_array_equal(np.isin(rows, tasks[1]), task_ids == 1)  # ids match rows
    again = class_balanced_memories(tasks, y, 240, seed=0)  # a resumed run rebuilds it
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(memories, again, strict=True))
    other = class_balanced_memories(tasks, y, 240, seed=1)
    assert not np.array_equal(memories[2][1], other[2][1])


def test_gdumb_trains_a_fresh_model_on_its_memory_after_each_task(
    tmp_path: Path, cache_dir: Path
) -> None:
    """One step per task at a constant lr: Adam's first step moves each weight by at most
    lr, so the final params lie within lr of the initial ones only if the last task started
    from scratch (naive fine-tuning, the same run otherwise, moves them further)."""
    import jax

    from dlx.restore import load_run

    lr = 0.01
    extra = ("continual.max_steps_per_task=1", "schedule=constant", f"optim.lr={lr}")
    moved = {}
    for strategy in ("gdumb", "naive"):
        run_dir, summary = _run(
            _overrides(
                tmp_path / strategy, f"continual.strategy={strategy}", *extra,
                "continual.replay_size=90",
            )
        )  # fmt: skip
        assert summary["status"] == "finished"
        run = load_run(run_dir, kind="latest")
        start = jax.tree_util.tree_leaves(run.setup.init_state().params)
        final = jax.tree_util.tree_leaves(run.state.params)
        moved[strategy] = max(float(np.abs(a - b).max()) for a, b in zip(start, final, strict=True))
        report = json.loads((run_dir / "continual.json").read_text())
        examples = [t["train_examples"] for t in report["tasks"]]
        if strategy == "gdumb":
            assert examples == [90, 90, 90]  # the memory, not the task's examples
    assert 0 < moved["gdumb"] <= lr * (1 + 1e-5)
    assert moved["naive"] > lr * 1.5
