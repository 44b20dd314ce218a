"""`dlx eval` and `dlx runs` on real tiny runs made through the CLI, plus the metric math."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlx.commands.eval import confusion_matrix, per_class_metrics
from dlx.tasks import lm_metrics

# 320 training examples / batch 32 = 10 steps an epoch: evals (and checkpoints) at steps
# 10, 20 and 30; `latest` keeps the last two (20, 30), `best` the best by val accuracy.
TRAIN = (
    "recipe=digits",
    "trainer.max_steps=30",
    "data.batch_size=32",
    "data.limit_train=320",
    "trainer.progress=none",
)
VAL_SIZE, TEST_SIZE = 144, 359  # digits: 20% test (359), 10% of the rest for val (144)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval-out")
    result = cli("train", *TRAIN, f"outputs.dir={root}")
    assert result.exit_code == 0, result.output
    (run_dir,) = (root / "digits").iterdir()
    return run_dir


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _eval(cli, *args: str) -> tuple[Path, dict]:
    """Run `dlx eval`, return the JSON it says it wrote and its content."""
    result = cli("eval", *args)
    assert result.exit_code == 0, result.output
    wrote = [line[6:] for line in result.output.splitlines() if line.startswith("wrote ")]
    (path,) = [Path(p) for p in wrote if p.endswith(".json")]
    return path, json.loads(path.read_text())


# ---- metric math on hand-built data ------------------------------------------------------


def test_per_class_metrics_exact() -> None:
    # rows: true class, columns: predicted. Class 2 is predicted once but never present;
    # class 3 neither: it is left out of the macro averages (as scikit-learn does).
    cm = np.array([[3, 1, 0, 0], [1, 2, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    out = per_class_metrics(cm)
    rows = {r["class"]: r for r in out["per_class"]}
    assert rows[0] == {"class": 0, "precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    assert rows[1]["precision"] == pytest.approx(2 / 3, abs=1e-12)
    assert rows[1]["recall"] == 0.5
    assert rows[1]["f1"] == pytest.approx(4 / 7, abs=1e-12)
    assert (rows[2]["precision"], rows[2]["recall"], rows[2]["f1"], rows[2]["support"]) == (
        0,
        0,
        0,
        0,
    )
    assert out["macro"]["precision"] == pytest.approx(17 / 36, abs=1e-12)
    assert out["macro"]["recall"] == pytest.approx(5 / 12, abs=1e-12)
    assert out["macro"]["f1"] == pytest.approx(37 / 84, abs=1e-12)
    assert out["accuracy"] == 5 / 8


def test_confusion_matrix_ignores_negative_labels_and_matches_sklearn() -> None:
    y_true = np.array([0, 0, 1, 2, -1, 2, -1])
    y_pred = np.array([0, 1, 1, 0, 2, 2, 0])
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]

    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 6, 500), rng.integers(0, 5, 500)  # class 5 never predicted
    ours = per_class_metrics(confusion_matrix(t, p, 7))  # class 6 never seen at all
    ref = precision_recall_fscore_support(t, p, average="macro", zero_division=0)
    assert [ours["macro"][k] for k in ("precision", "recall", "f1")] == pytest.approx(ref[:3])
    ref_f1 = precision_recall_fscore_support(t, p, labels=range(7), zero_division=0)[2]
    assert [r["f1"] for r in ours["per_class"]] == pytest.approx(ref_f1)


def test_lm_metrics() -> None:
    assert lm_metrics(math.log(2)) == pytest.approx({"bits_per_char": 1.0, "perplexity": 2.0})
    assert lm_metrics(1.5)["bits_per_char"] == pytest.approx(1.5 / 0.6931471805599453)
    assert lm_metrics(1.5)["perplexity"] == pytest.approx(4.4816890703380645)


# ---- dlx eval --------------------------------------------------------------------------


def test_eval_best_reproduces_the_runs_test_metrics(cli, run: Path) -> None:
    summary = _summary(run)
    best_step = summary["best"]["step"]
    path, rec = _eval(cli, str(run))
    assert path == run / f"eval_test_{best_step}.json"
    assert rec["checkpoint"]["kind"] == "best" and rec["checkpoint"]["step"] == best_step
    m = rec["metrics"]
    # The run measured test on its best params: the same numbers come back.
    assert m["test/accuracy"] == summary["test"]["test/accuracy"]
    assert m["test/count"] == summary["test"]["test/count"] == TEST_SIZE
    assert m["test/loss"] == pytest.approx(summary["test"]["test/loss"], rel=1e-5)
    cm = np.array(rec["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == TEST_SIZE
    assert np.trace(cm) / TEST_SIZE == pytest.approx(m["test/accuracy"], abs=1e-12)
    assert [r["support"] for r in rec["per_class"]] == cm.sum(axis=1).tolist()
    assert m["test/macro_f1"] == pytest.approx(per_class_metrics(cm)["macro"]["f1"])
    png = run / f"eval_test_{best_step}_confusion.png"
    assert rec["confusion_png"] == png.name
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 1000

    # A second eval never overwrites the first: it gets _2 (JSON and PNG).
    first = path.read_text()
    path2, rec2 = _eval(cli, str(run))
    assert path2 == run / f"eval_test_{best_step}_2.json"
    assert path.read_text() == first
    assert (run / f"eval_test_{best_step}_2_confusion.png").read_bytes()[:8] == PNG_MAGIC
    assert rec2["metrics"]["test/accuracy"] == m["test/accuracy"]


def test_eval_latest_step_and_checkpoint_path(cli, run: Path) -> None:
    _, rec = _eval(cli, str(run), "--latest")
    assert (rec["checkpoint"]["kind"], rec["checkpoint"]["step"]) == ("latest", 30)
    path, rec = _eval(cli, str(run), "--step", "20")
    assert rec["checkpoint"]["step"] == 20 and path.name.startswith("eval_test_20")
    # A checkpoint folder picks that checkpoint.
    _, rec = _eval(cli, str(run / "checkpoints" / "latest" / "20"))
    assert (rec["checkpoint"]["kind"], rec["checkpoint"]["step"]) == ("latest", 20)

    result = cli("eval", str(run), "--step", "7")
    assert result.exit_code == 2
    assert "no checkpoint at step 7" in result.output and "20, 30" in result.output


def test_eval_run_without_best_checkpoint(cli, run: Path, tmp_path: Path) -> None:
    # Preempted before its first eval improved anything: only latest/ holds checkpoints.
    copy = tmp_path / "digits" / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("eval_*"))
    for step_dir in (copy / "checkpoints" / "best").iterdir():
        shutil.rmtree(step_dir)
    result = cli("eval", str(copy))
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "no best checkpoint yet, only latest (steps 20, 30)" in text and "--latest" in text
    assert not list(copy.glob("eval_*"))


def test_eval_val_split_reproduces_best_val_metric(cli, run: Path) -> None:
    summary = _summary(run)
    _, rec = _eval(cli, str(run), "--split", "val")
    assert rec["split"] == "val" and rec["metrics"]["val/count"] == VAL_SIZE
    assert rec["metrics"]["val/accuracy"] == summary["best"]["val/accuracy"]
    assert (run / f"eval_val_{summary['best']['step']}_confusion.png").is_file()


def test_eval_with_data_override(cli, run: Path) -> None:
    _, rec = _eval(cli, str(run), "data.limit_eval=100", "data.eval_batch_size=64")
    assert rec["metrics"]["test/count"] == 100 and rec["data"]["examples"] == 100
    assert np.array(rec["confusion_matrix"]).sum() == 100
    assert rec["overrides"] == ["data.limit_eval=100", "data.eval_batch_size=64"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("/nonexistent/run",), "no such run directory"),
        (("{tmp}",), "is not a dlx run directory"),
        (("{run}", "data.bogus=1"), "unknown config key 'data.bogus'"),
        (("{run}", "--split", "dev"), "unknown split 'dev'"),
        (("{run}", "--latest", "--step", "20"), "cannot be used together"),
        # not the model the checkpoint was saved from
        (("{run}", "model.dense=32"), "this model has (32,)"),
    ],
)
def test_eval_user_errors(cli, run: Path, tmp_path: Path, args, message) -> None:
    before = sorted(p.name for p in run.iterdir())
    result = cli("eval", *(a.format(run=run, tmp=tmp_path) for a in args))
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # rich wraps long messages at 80 columns
    assert message in text and "Traceback" not in text
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written


LM_TEXT = "Emma Woodhouse, handsome, clever, and rich, had lived nearly twenty-one years.\n"


# ~20-35 s on 2 busy cores (a transformer compile to train, and restore's eager model.init,
# ~8 s of it): in `make test-slow`. The LM metric math is covered by test_lm_metrics.
@pytest.mark.slow
def test_eval_language_model(cli, tmp_path: Path) -> None:
    if not (Path(__file__).resolve().parents[1] / "recipes" / "transformer.yaml").is_file():
        pytest.skip("no transformer recipe")
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(LM_TEXT * 40, encoding="utf-8")
    args = (
        "recipe=transformer",
        f"data.path={corpus}",
        "data.seq_len=16",
        "data.batch_size=8",
        "data.eval_batch_size=16",
        "data.limit_train=64",
        "model.d_model=16",
        "model.heads=2",
        "model.layers=1",
        "trainer.max_steps=4",
        "trainer.progress=none",
    )
    result = cli("train", *args, f"outputs.dir={tmp_path}")
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "transformer").iterdir()
    summary = _summary(run_dir)
    _, rec = _eval(cli, str(run_dir))
    m = rec["metrics"]
    assert rec["task"] == "lm" and "confusion_matrix" not in rec
    assert not list(run_dir.glob("*.png"))
    assert m["test/loss"] == pytest.approx(summary["test"]["test/loss"], rel=1e-5)
    assert m["test/bits_per_char"] == pytest.approx(m["test/loss"] / math.log(2), rel=1e-12)
    assert m["test/perplexity"] == pytest.approx(math.exp(m["test/loss"]), rel=1e-12)


# ---- dlx runs --------------------------------------------------------------------------


def _runs(cli, *args: str) -> list[dict]:
    result = cli("runs", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_runs_lists_a_real_run(cli, run: Path) -> None:
    summary = _summary(run)
    (row,) = _runs(cli, "--root", str(run.parents[1]))
    assert row["run_dir"] == str(run) and row["recipe"] == "digits"
    assert row["status"] == "finished" and row["steps"] == 30
    assert row["best_metric"] == "val/accuracy"
    assert row["best"] == summary["best"]["val/accuracy"]
    assert row["duration_s"] == summary["wall_time_s"]
    meta = json.loads((run / "meta.json").read_text())
    assert row["started"][:19] == meta["started"][:19]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid no longer exists
    return proc.pid


def _fake_run(root: Path, rel: str, summary: object | None = None, meta: dict | None = None):
    d = root / rel
    d.mkdir(parents=True)
    if isinstance(summary, str):
        (d / "summary.json").write_text(summary)
    elif summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))
    if meta is not None:
        (d / "meta.json").write_text(json.dumps(meta))
    return d


def test_runs_statuses_filter_and_order(cli, tmp_path: Path) -> None:
    host = platform.node()
    running = {"status": "running", "recipe": "digits", "host": host}
    _fake_run(tmp_path, "digits/2026-01-01_00-00-01_dead", {**running, "pid": _dead_pid()})
    _fake_run(tmp_path, "digits/2026-01-01_00-00-02_live", {**running, "pid": os.getpid()})
    _fake_run(
        tmp_path, "digits/2026-01-01_00-00-03_away", {**running, "pid": 1, "host": "elsewhere"}
    )
    _fake_run(tmp_path, "digits/2026-01-01_00-00-04_bad1", '{"status": "fini')
    _fake_run(tmp_path, "digits/2026-01-01_00-00-05_bad2", "[1, 2]")
    _fake_run(tmp_path, "cnn/2026-01-01_00-00-06_none")
    preempted = {
        "status": "preempted",
        "steps": 120,
        "best": {"val/loss": 0.25, "step": 100, "epoch": 2},
        "wall_time_s": 42.0,
    }
    # Started (meta.json) before every other run, although its dir name says later.
    _fake_run(
        tmp_path,
        "cnn/2026-01-02_00-00-00_prmt",
        preempted,
        {"started": "2025-12-30T00:00:00+0000"},
    )
    _fake_run(tmp_path, "sweeps/s1/trials/0000/digits/2026-01-01_00-00-07_swp0", {"status": "x"})

    rows = _runs(cli, "--root", str(tmp_path))
    by_id = {Path(r["run_dir"]).name[-4:]: r for r in rows}
    assert {k: r["status"] for k, r in by_id.items()} == {
        "dead": "failed",
        "live": "running",
        "away": "running",  # another host: its pid cannot be checked from here
        "bad1": "corrupt",
        "bad2": "corrupt",
        "none": "unknown",
        "prmt": "preempted",
    }
    assert "is gone" in by_id["dead"]["error"]
    p = by_id["prmt"]
    assert (p["best_metric"], p["best"], p["best_step"], p["steps"]) == ("val/loss", 0.25, 100, 120)
    assert p["duration_s"] == 42.0
    order = [Path(r["run_dir"]).name[-4:] for r in rows]
    assert order == ["prmt", "dead", "live", "away", "bad1", "bad2", "none"]

    cnn = _runs(cli, "--root", str(tmp_path), "--recipe", "cnn")
    assert [Path(r["run_dir"]).name[-4:] for r in cnn] == ["prmt", "none"]
    with_sweeps = _runs(cli, "--root", str(tmp_path), "--sweeps")
    (trial,) = [r for r in with_sweeps if r["sweep"] is not None]
    assert trial["sweep"] == "s1" and trial["recipe"] == "digits" and trial["status"] == "x"

    table = cli("runs", "--root", str(tmp_path))
    assert table.exit_code == 0, table.output
    for word in ("failed", "corrupt", "preempted", "unknown", "0.2500 @100"):
        assert word in table.output


def test_runs_errors_and_empty(cli, tmp_path: Path) -> None:
    result = cli("runs", "--root", str(tmp_path / "missing"))
    assert result.exit_code == 2 and "no outputs folder" in result.output
    assert "Traceback" not in result.output
    assert _runs(cli, "--root", str(tmp_path)) == []
    assert "no runs under" in cli("runs", "--root", str(tmp_path)).output
