"""`dlx sweep`: the grammar, reproducible proposals, resume, failures, two workers on one
study, pruning, core sharing, and one real end-to-end sweep of `dlx train` processes.

Most tests run trials with a fake runner (instant, scored from the params) so they exercise
the study, claiming and outputs without JAX; the subprocess runner is tested against a tiny
fake `dlx train` script, and once against the real thing."""

from __future__ import annotations

import _thread
import io
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from dlx.errors import UserError
from dlx.sweep.plan import make_plan
from dlx.sweep.report import rows_from_file
from dlx.sweep.resources import Slot, make_slots
from dlx.sweep.settings import load_settings
from dlx.sweep.space import grid_points, parse_overrides, random_points
from dlx.sweep.study import SweepStudy, trial_rows
from dlx.sweep.trial import SubprocessRunner, TrialJob, TrialResult
from dlx.sweep.worker import execute, run_sweep

TINY = (
    "recipe=digits",
    "trainer.max_steps=3",
    "data.limit_train=256",
    "data.limit_eval=64",
    "data.batch_size=32",
    "model.features=[4,8]",
    "model.dense=8",
)


def score(params: dict[str, Any]) -> float:
    """A deterministic 'accuracy' with its best at lr=3e-3, dense=64."""
    lr = float(params.get("optim.lr", 1e-3))
    dense = float(params.get("model.dense", 32))
    return 1.0 - abs(math.log10(lr) - math.log10(3e-3)) / 4 - abs(dense - 64) / 1000


class FakeRunner:
    """Instant trials scored by `score`; records the params of every trial it ran."""

    def __init__(
        self,
        fail_if: Any = None,
        interrupt_at: int | None = None,
        delay: float = 0.0,
        steps: int = 0,
        score_fn: Any = score,
    ) -> None:
        self.fail_if, self.interrupt_at, self.score_fn = fail_if, interrupt_at, score_fn
        self.delay, self.steps = delay, steps
        self.ran: list[dict[str, Any]] = []
        self.reported: dict[int, list[int]] = {}
        self._lock = threading.Lock()

    def run(self, job: TrialJob, slot: Slot, report: Any, stop: threading.Event) -> TrialResult:
        with self._lock:
            self.ran.append(dict(job.params))
            n = len(self.ran)
        if self.interrupt_at is not None and n == self.interrupt_at:
            _thread.interrupt_main()  # what Ctrl-C does: KeyboardInterrupt in the main thread
            assert stop.wait(10), "the sweep did not stop its trials"
            return TrialResult("interrupted", error="interrupted")
        time.sleep(self.delay)
        if self.fail_if is not None and self.fail_if(job.params):
            return TrialResult("failed", error="RuntimeError: boom", duration_s=self.delay)
        value = self.score_fn(job.params)
        for step in range(1, self.steps + 1):
            self.reported.setdefault(job.number, []).append(step)
            if report(step, value):
                return TrialResult("pruned", value, step=step)
        return TrialResult("finished", value, run_dir=str(job.out_dir), step=self.steps)


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def sweep(tmp: Path, *overrides: str, runner: Any, jobs: int = 1, name: str | None = None):
    return run_sweep(
        [*TINY, f"outputs.dir={tmp}", *overrides],
        jobs=jobs,
        name=name,
        runner=runner,
        console=quiet(),
    )


def rows(sweep_dir: Path) -> list[dict[str, Any]]:
    return rows_from_file(sweep_dir / "trials.jsonl")


def param_sets(params: list[dict[str, Any]]) -> list[tuple]:
    return [tuple(sorted(p.items())) for p in params]


# ----- grammar


def test_grid_expansion_matches_hydra_and_keeps_override_text() -> None:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    given = [
        "recipe=digits",
        "optim.lr=1e-4,3e-4,1e-3",
        "model.features=[4,8],[8,16]",
        "seed=range(0,4,2)",
        "optim=choice(adam,sgd)",
        "sweep=grid",
        "sweep.metric=val/loss",
    ]
    parsed = parse_overrides(given)
    assert parsed.fixed == ["recipe=digits"]
    assert parsed.settings == {"sweep": "grid", "sweep.metric": "val/loss"}
    assert [p.key for p in parsed.params] == ["optim.lr", "model.features", "seed", "optim"]
    points = grid_points(parsed.params)
    assert len(points) == 3 * 2 * 2 * 2
    ours = [[p.override(pt[p.key]) for p in parsed.params] for pt in points]
    sweeps = OverridesParser.create().parse_overrides(given[1:5])
    assert ours == BasicSweeper.split_arguments(sweeps, None)[0]  # same order as Hydra
    assert ours[0] == ["optim.lr=0.0001", "model.features=[4,8]", "seed=0", "optim=adam"]
    assert ours[-1] == ["optim.lr=0.001", "model.features=[8,16]", "seed=2", "optim=sgd"]
    assert points[0]["model.features"] == "[4,8]"  # lists are stored as their override text


def test_intervals_tags_and_grammar_errors() -> None:
    p = parse_overrides(["optim.lr=tag(log, interval(1e-4, 1e-2))"]).params[0]
    assert (p.kind, p.low, p.high, p.log) == ("interval", 1e-4, 1e-2, True)
    assert p.describe() == "tag(log, interval(0.0001, 0.01))"
    n = parse_overrides(["model.dense=tag(int, interval(8, 64))"]).params[0]
    assert n.integer and n.override(17.6) == "model.dense=17"
    with pytest.raises(UserError, match="continuous: a grid needs a list"):
        grid_points([p])
    with pytest.raises(UserError, match="cannot parse override"):
        parse_overrides(["optim.lr=choice(1,"])
    with pytest.raises(UserError, match="positive bounds"):
        parse_overrides(["optim.lr=tag(log, interval(0, 1))"])
    with pytest.raises(UserError, match="sweep settings take one value"):
        parse_overrides(["sweep.seed=1,2"])


def test_random_points_are_seeded_and_extend_as_a_prefix() -> None:
    params = parse_overrides(
        ["optim.lr=tag(log, interval(1e-4, 1e-2))", "model.dense=16,32,64"]
    ).params
    a, b = random_points(params, 5, seed=3), random_points(params, 5, seed=3)
    assert a == b
    assert random_points(params, 3, seed=3) == a[:3]  # more trials later = same first ones
    assert random_points(params, 5, seed=4) != a
    seeds = parse_overrides(["seed=range(0,5)"]).params
    assert sorted(p["seed"] for p in random_points(seeds, 5, seed=0)) == [0, 1, 2, 3, 4]
    lrs = [pt["optim.lr"] for pt in random_points(params, 400, seed=0)]
    assert all(1e-4 <= v <= 1e-2 for v in lrs)
    # Log-uniform: about half the draws below the geometric midpoint 1e-3.
    assert 0.4 < sum(v < 1e-3 for v in lrs) / len(lrs) < 0.6


def test_settings_defaults_and_errors() -> None:
    assert load_settings({}, continuous=False).type == "grid"
    s = load_settings({}, continuous=True)
    assert (s.type, s.trials, s.direction, s.prune) == ("optuna", 20, "max", True)
    assert load_settings({"sweep.metric": "val/loss"}, False).direction == "min"
    r = load_settings({"sweep": "random", "sweep.trials": 7, "sweep.seed": 2}, False)
    assert (r.type, r.trials, r.seed) == ("random", 7, 2)
    with pytest.raises(UserError, match=r"unknown sweep setting 'sweep.trails'.*sweep.trials"):
        load_settings({"sweep.trails": 3}, False)
    with pytest.raises(UserError, match=r"unknown sweep 'optuan'\. Did you mean: optuna"):
        load_settings({"sweep": "optuan"}, False)
    with pytest.raises(UserError, match="must be max or min"):
        load_settings({"sweep.direction": "up"}, False)


def test_bad_trial_override_fails_before_anything_runs(cli, tmp_path: Path) -> None:
    # The typo is in the second value only: every value is composed before launching.
    result = cli("sweep", *TINY, f"outputs.dir={tmp_path}", "optim.lr=1e-3,fast")
    assert result.exit_code == 2
    assert "optim.lr=fast" in result.output and "wrong value for 'optim.lr'" in result.output
    result = cli("sweep", *TINY, f"outputs.dir={tmp_path}", "optim.lrr=1,2")
    assert result.exit_code == 2 and "unknown config key 'optim.lrr'" in result.output
    result = cli("sweep", *TINY, f"outputs.dir={tmp_path}", "sweep=grid", "optim.lr=3e-4")
    assert result.exit_code == 2 and "nothing to sweep" in result.output
    assert not (tmp_path / "sweeps").exists()


def test_dry_run_lists_trials_and_writes_nothing(cli, tmp_path: Path) -> None:
    result = cli(
        "sweep",
        *TINY,
        f"outputs.dir={tmp_path}",
        "optim.lr=1e-3,3e-3",
        "model.dense=8,16",
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    assert "grid, 4 trials" in result.output
    assert "optim.lr=0.003 model.dense=16" in result.output
    assert result.output.count("to run") == 4
    assert not (tmp_path / "sweeps").exists()


# ----- running, with the fake runner


def test_grid_runs_every_point_failures_recorded_outputs_written(tmp_path: Path) -> None:
    runner = FakeRunner(fail_if=lambda p: p["model.dense"] == 16)
    out = sweep(tmp_path, "optim.lr=1e-3,3e-3,1e-2", "model.dense=16,64", runner=runner)
    assert out.parent == tmp_path / "sweeps" and out.name.startswith("digits-grid-")
    got = rows(out)
    assert len(runner.ran) == len(got) == 6 and [r["trial"] for r in got] == list(range(6))
    failed = [r for r in got if r["status"] == "failed"]
    assert len(failed) == 3 and all(r["error"] == "RuntimeError: boom" for r in failed)
    for r in got:
        if r["status"] == "finished":
            assert r["value"] == pytest.approx(score(r["params"]))
            assert f"model.dense={r['params']['model.dense']}" in r["overrides"]
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["params"] == {"optim.lr": 3e-3, "model.dense": 64}
    assert best["value"] == pytest.approx(1.0)
    assert best["command"].startswith("dlx train recipe=digits")
    assert "optim.lr=0.003" in best["command"] and best["counts"] == {"finished": 3, "failed": 3}
    spec = yaml.safe_load((out / "sweep.yaml").read_text())
    assert spec["type"] == "grid" and spec["trials"] == 6 and spec["params"]["model.dense"]
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert plots == ["history.png", "param_model.dense.png", "param_optim.lr.png"]
    assert all((out / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in plots)


@pytest.mark.parametrize("kind", ["random", "optuna"])
def test_same_seed_proposes_the_same_trials(tmp_path: Path, kind: str) -> None:
    args = (
        "optim.lr=tag(log, interval(1e-4, 1e-1))",
        "model.dense=16,32,64,128",
        f"sweep={kind}",
        "sweep.trials=8",
        "sweep.startup=3",  # optuna: TPE models from trial 3 on
    )
    ran = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        runner = FakeRunner()
        sweep(tmp_path, *args, f"sweep.seed={seed}", runner=runner, name=name)
        ran.append(runner.ran)
        assert len(runner.ran) == 8
    assert ran[0] == ran[1]
    assert ran[0] != ran[2]
    # Other results: random proposes the same trials; TPE the same 3 start-up trials, then
    # others (it models the results).
    flipped = FakeRunner(score_fn=lambda p: -score(p))
    sweep(tmp_path, *args, "sweep.seed=0", runner=flipped, name="d")
    assert flipped.ran[:3] == ran[0][:3]
    assert (flipped.ran[3:] == ran[0][3:]) == (kind == "random")


@pytest.fixture
def ctrl_c_raises():  # type: ignore[no-untyped-def]
    """Python's own SIGINT handler, as in a terminal. A shell starts background jobs (`make
    test &`, some CI runners) with SIGINT ignored, and then `_thread.interrupt_main` does
    nothing, so FakeRunner's simulated Ctrl-C would never arrive."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("ctrl_c_raises")
def test_resume_after_interrupt_runs_only_the_missing_trials(tmp_path: Path) -> None:
    args = ("optim.lr=1e-3,3e-3,1e-2", "model.dense=16,64")
    first = FakeRunner(interrupt_at=3)  # trials 1-2 finish, the 3rd is cut by "Ctrl-C"
    with pytest.raises(KeyboardInterrupt):
        sweep(tmp_path, *args, runner=first)
    (out,) = (tmp_path / "sweeps").iterdir()
    got = rows(out)
    assert [r["status"] for r in got] == ["finished", "finished", "interrupted"]
    second = FakeRunner()
    assert sweep(tmp_path, *args, runner=second) == out  # same command, same sweep
    everything = param_sets([p for p in grid_points(parse_overrides(args).params)])
    done_before = param_sets(first.ran[:2])
    assert sorted(param_sets(second.ran)) == sorted(set(everything) - set(done_before))
    final = rows(out)
    assert sum(r["status"] == "finished" for r in final) == 6
    assert sorted(param_sets([r["params"] for r in final if r["status"] == "finished"])) == sorted(
        everything
    )
    third = FakeRunner()
    sweep(tmp_path, *args, runner=third)
    assert third.ran == []  # nothing left: a finished sweep reruns nothing


@pytest.mark.usefixtures("ctrl_c_raises")
def test_optuna_resume_tops_up_to_the_budget(tmp_path: Path) -> None:
    args = ("optim.lr=tag(log, interval(1e-4, 1e-1))", "sweep.trials=5")
    with pytest.raises(KeyboardInterrupt):
        sweep(tmp_path, *args, runner=FakeRunner(interrupt_at=3))
    second = FakeRunner()
    out = sweep(tmp_path, *args, runner=second)
    assert len(second.ran) == 3  # 2 finished before; the interrupted one is not counted
    assert [r["status"] for r in rows(out)].count("finished") == 5


@pytest.mark.parametrize(
    ("kind", "storage"),
    [("grid", None), ("grid", "sqlite"), ("optuna", None)],
)
def test_two_workers_on_one_storage_never_run_the_same_trial(
    tmp_path: Path, kind: str, storage: str | None
) -> None:
    args = [*TINY, f"outputs.dir={tmp_path}"]
    if kind == "grid":
        args += ["optim.lr=1e-4,3e-4,1e-3,3e-3", "model.dense=8,16,32"]
    else:
        args += ["optim.lr=tag(log, interval(1e-4, 1e-1))", "sweep=optuna", "sweep.trials=10"]
    if storage == "sqlite":
        args.append(f"sweep.storage=sqlite:///{tmp_path}/study.db")
    plan = make_plan(args)  # once: Hydra's compose is not thread-safe
    runners = [FakeRunner(delay=0.25), FakeRunner(delay=0.25)]
    errors: list[BaseException] = []

    def worker(runner: FakeRunner) -> None:
        try:
            execute(plan, ["dlx", "sweep"], jobs=2, runner=runner, console=quiet())
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(r,)) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    ran = param_sets(runners[0].ran + runners[1].ran)
    assert len(ran) == len(set(ran)) == (12 if kind == "grid" else 10)
    assert runners[0].ran and runners[1].ran  # both did work
    final = trial_rows(SweepStudy(plan))
    assert [r["status"] for r in final].count("finished") == len(ran)


def test_pruning_stops_poor_trials_early(tmp_path: Path) -> None:
    runner = FakeRunner(steps=4)
    out = sweep(
        tmp_path,
        "optim.lr=3e-3,1e-3,1e-4,1e-2,1e-1,3e-5",  # best first: later, worse ones get pruned
        "sweep.prune=true",
        "sweep.prune_startup=2",
        runner=runner,
    )
    status = {r["trial"]: r["status"] for r in rows(out)}
    assert status[0] == status[1] == "finished"
    pruned = [n for n, s in status.items() if s == "pruned"]
    assert len(pruned) >= 3
    assert all(runner.reported[n] == [1] for n in pruned)  # stopped at their first eval
    assert all(runner.reported[n] == [1, 2, 3, 4] for n in (0, 1))


def test_dead_workers_running_trial_is_rerun(tmp_path: Path) -> None:
    plan = make_plan([*TINY, f"outputs.dir={tmp_path}", "optim.lr=1e-3,3e-3"])
    ghost = SweepStudy(plan, worker="ghost")
    claim = ghost.claim()
    assert claim is not None
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer exists: its worker was killed (SIGKILL, power cut)
    ghost.storage.set_trial_user_attr(claim.trial_id, "pid", gone.pid)
    runner = FakeRunner()
    execute(plan, ["dlx", "sweep"], runner=runner, console=quiet())
    assert param_sets(runner.ran) == param_sets(
        [{"optim.lr": 1e-3}, {"optim.lr": 3e-3}]
    )  # the ghost's point ran again
    got = rows(plan.sweep_dir)
    assert got[0]["status"] == "interrupted" and "worker ghost stopped" in got[0]["error"]


@pytest.mark.parametrize("pid", ["abc", None, 0])
def test_malformed_worker_pid_is_left_to_the_heartbeat(tmp_path: Path, pid: Any) -> None:
    """A pid no worker writes (workers record os.getpid()) proves nothing: the trial keeps
    running until its heartbeat goes stale."""
    plan = make_plan([*TINY, f"outputs.dir={tmp_path}", "optim.lr=1e-3,3e-3"])
    ghost = SweepStudy(plan, worker="ghost")
    claim = ghost.claim()
    assert claim is not None
    ghost.storage.set_trial_user_attr(claim.trial_id, "pid", pid)
    other = SweepStudy(plan, worker="other")
    other.reap()
    assert [r["status"] for r in trial_rows(other)] == ["running"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_zombie_worker_pid_counts_as_gone(tmp_path: Path) -> None:
    plan = make_plan([*TINY, f"outputs.dir={tmp_path}", "optim.lr=1e-3,3e-3"])
    ghost = SweepStudy(plan, worker="ghost")
    claim = ghost.claim()
    assert claim is not None
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30  # exited, not yet waited for: a zombie
        while time.monotonic() < deadline:
            stat = Path(f"/proc/{zombie.pid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                break
            time.sleep(0.01)
        ghost.storage.set_trial_user_attr(claim.trial_id, "pid", zombie.pid)
        other = SweepStudy(plan, worker="other")
        other.reap()
    finally:
        zombie.wait()
    got = trial_rows(other)
    assert got[0]["status"] == "interrupted" and "worker ghost stopped" in got[0]["error"]


# ----- the subprocess runner, against a fake `dlx train`

FAKE_TRAIN = r"""
import json, math, os, signal, sys, time
args = dict(a.split("=", 1) for a in sys.argv[2:] if "=" in a)
mode = args.get("mode", "ok")
run = os.path.join(args["outputs.dir"], "fake", "run")
os.makedirs(run)
if mode == "crash":
    raise ValueError("loss exploded")
metrics = open(os.path.join(run, "metrics.jsonl"), "w")
steps = int(args.get("steps", "3"))
for step in range(1, steps + 1):
    value = "nan" if mode == "nan" else 0.1 * step
    loss = "nan" if mode == "nanloss" and step == 2 else 1.0 / step
    metrics.write(json.dumps({"step": step, "train/loss": loss}) + "\n")
    metrics.write(json.dumps({"step": step, "val/accuracy": value}) + "\n")
    metrics.flush()
    time.sleep(0.1)
best = float("nan") if mode == "nan" else 0.1 * steps
json.dump({"status": "finished", "best": {"val/accuracy": "nan" if mode == "nan" else best,
           "step": steps}}, open(os.path.join(run, "summary.json"), "w"))
"""


@pytest.mark.parametrize(
    ("mode", "status", "needle"),
    [
        ("ok", "finished", None),
        ("crash", "failed", "ValueError: loss exploded"),
        ("nan", "failed", "diverged: val/accuracy is nan at step 1"),
        ("nanloss", "failed", "diverged: train/loss is nan at step 2"),
    ],
)
def test_subprocess_runner_results(tmp_path: Path, mode: str, status: str, needle: str) -> None:
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    job = TrialJob(
        0, [f"mode={mode}", f"outputs.dir={tmp_path}/t"], {}, tmp_path / "t", "val/accuracy", True
    )
    reported: list[tuple[int, float]] = []
    result = SubprocessRunner([sys.executable, str(script)]).run(
        job, Slot(0), lambda s, v: bool(reported.append((s, v))), threading.Event()
    )
    assert result.status == status
    if needle:
        assert needle in result.error
    else:
        assert result.value == pytest.approx(0.3) and result.step == 3
        assert [s for s, _ in reported] == [1, 2, 3]  # every eval, each once
        assert result.run_dir == str(tmp_path / "t" / "fake" / "run")


def test_subprocess_runner_prunes_by_stopping_the_process(tmp_path: Path) -> None:
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    job = TrialJob(
        0, ["steps=200", f"outputs.dir={tmp_path}/t"], {}, tmp_path / "t", "val/accuracy", True
    )
    t0 = time.monotonic()
    result = SubprocessRunner([sys.executable, str(script)], grace_s=5).run(
        job, Slot(0), lambda step, value: step >= 2, threading.Event()
    )
    assert result.status == "pruned" and result.step == 2
    assert result.value == pytest.approx(0.2)
    assert time.monotonic() - t0 < 10  # 200 steps would take 20 s


# ----- sharing the machine


def test_slots_split_cores_and_gpus() -> None:
    two = make_slots(2, cpus=[0, 1, 2, 3], gpus=[])
    assert [s.cpus for s in two] == [(0, 1), (2, 3)] and two[0].gpus is None
    assert two[1].env({})["OMP_NUM_THREADS"] == "2"
    assert [s.cpus for s in make_slots(3, cpus=[0, 1], gpus=[])] == [(0,), (1,), (0,)]
    gpu = make_slots(4, cpus=[0, 1, 2, 3], gpus=["0", "1"])
    assert [s.gpus for s in gpu] == [("0",), ("1",), ("0",), ("1",)]
    env = gpu[2].env({})
    assert env["CUDA_VISIBLE_DEVICES"] == "0" and env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.45"
    assert make_slots(2, cpus=[0, 1], gpus=["0", "1", "2", "3"])[1].gpus == ("2", "3")
    assert make_slots(1) == [Slot(0)]


def test_pinned_trial_runs_on_its_cores_only() -> None:
    cpu = min(os.sched_getaffinity(0))
    argv = [
        sys.executable,
        "-c",
        "import os, sys; print(sorted(os.sched_getaffinity(0)), sys.argv)",
    ]
    out = subprocess.run(
        Slot(0, (cpu,)).command([*argv, "x=1"]), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"[{cpu}] ['-c', 'x=1']"


# ----- the real thing


def test_cli_sweep_end_to_end(tmp_path: Path, cache_dir: Path) -> None:
    """Two real `dlx train` trials at once: digits trains, mnist at a missing path fails with
    its error, and the sweep finishes with every output."""
    env = {**os.environ, "CI": "true", "COLUMNS": "200", "DLX_CACHE": str(cache_dir)}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parent.parent), env.get("PYTHONPATH", "")]
    )
    args = [*TINY, f"outputs.dir={tmp_path}", "data=digits,mnist", "++data.path=/nonexistent"]
    proc = subprocess.run(
        [sys.executable, "-m", "dlx", "sweep", *args, "++data.download=false", "--jobs", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (out,) = (tmp_path / "sweeps").iterdir()
    by_data = {r["params"]["data"]: r for r in rows(out)}
    ok, bad = by_data["digits"], by_data["mnist"]
    assert ok["status"] == "finished" and 0 <= ok["value"] <= 1
    summary = json.loads((Path(ok["run_dir"]) / "summary.json").read_text())
    assert summary["best"]["val/accuracy"] == ok["value"]
    assert Path(ok["run_dir"]).parent.parent == out / "trials" / f"{ok['trial']:04d}"
    assert bad["status"] == "failed" and "is not a folder" in bad["error"]
    assert bad["error"].startswith("exit 2: error:")
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["trial"] == ok["trial"] and "data=digits" in best["overrides"]
    assert (out / "plots" / "history.png").is_file()
    assert "leaderboard" in proc.stdout and f"trial {bad['trial']} failed" in proc.stdout


def test_missing_metric_names_what_was_logged(tmp_path: Path) -> None:
    from dlx.sweep.trial import read_result

    (tmp_path / "summary.json").write_text('{"status": "finished", "best": {}}')
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "val/accuracy": 0.5, "val/loss": 1}\n')
    result = read_result(tmp_path, "val/acc", True, 1.0)
    assert result.status == "failed"
    assert result.error == "the run logged no 'val/acc' (it logged: val/accuracy, val/loss)"
    ok = read_result(tmp_path, "val/loss", False, 1.0)
    assert (ok.status, ok.value, ok.step) == ("finished", 1.0, 1)
