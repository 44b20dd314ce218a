"""`dlx report`: one self-contained HTML file for a run, several runs, a sweep; loaded in a real
headless Chromium (Debian's `chromium`, which `make test` installs when missing), checked for
console errors, network requests and the elements and numbers it must show, and screenshotted
(the test's tmp dir, plus copies in /tmp/report_shots/)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from dlx.sweep.report import rows_from_file
from dlx.sweep.trial import TrialResult

TINY = (
    "recipe=digits",
    "trainer.epochs=3",
    "trainer.log_every=2",
    "data.limit_train=128",
    "data.limit_eval=64",
    "data.batch_size=32",
    "model.features=[4,8]",
    "model.dense=8",
    "trainer.progress=none",
)
SHOTS = Path("/tmp/report_shots")
ROOT = Path(__file__).resolve().parent.parent


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    return None


# ----- fixtures: two tiny runs, one of them evaluated and dressed up, and a sweep -----------


@pytest.fixture(scope="module")
def runs(cli, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("report-runs")
    out = tmp / "outs"
    for extra in ((), ("optim.lr=1e-2",)):
        result = cli("train", *TINY, *extra, f"outputs.dir={out}")
        assert result.exit_code == 0, result.output
    first, second = sorted((out / "digits").iterdir())
    result = cli("eval", str(first))
    assert result.exit_code == 0, result.output
    # A copy with what other kinds of run and `dlx explain` leave: figures, JSON tables, a
    # continual R matrix, GAN sample grids (the report shows whatever a run has).
    full = tmp / "full" / "digits" / first.name
    shutil.copytree(first, full)
    png = first / "plots" / "lr_schedule.png"
    (full / "explain").mkdir()
    shutil.copy(png, full / "explain" / "saliency.png")
    (full / "explain" / "summary.json").write_text(
        json.dumps(
            {
                "examples": 16,
                "methods": [
                    {"method": "saliency", "deletion_auc": 0.31, "insertion_auc": 0.62},
                    {"method": "random", "deletion_auc": 0.45, "insertion_auc": 0.44},
                ],
            }
        )
    )
    shutil.copy(png, full / "plots" / "samples_1.png")
    shutil.copy(png, full / "plots" / "samples_2.png")
    (full / "continual.json").write_text(
        json.dumps(
            {
                "task_names": ["0/1", "2/3"],
                "R": [[0.99, 0.1], [0.6, 0.97]],
                "R_definition": "R[i][j]: accuracy on task j after training tasks 0..i",
                "average_accuracy": 0.785,
                "backward_transfer": -0.39,
            }
        )
    )
    return {"first": first, "second": second, "full": full, "root": out}


class ScoreRunner:
    """Instant sweep trials with a score that depends on both parameters; trial 3 fails."""

    def run(self, job: Any, slot: Any, report: Any, stop: threading.Event) -> TrialResult:
        if job.number == 3:
            return TrialResult("failed", error="RuntimeError: boom")
        lr, dense = float(job.params["optim.lr"]), float(job.params["model.dense"])
        value = 0.9 - abs(math.log10(lr) + 2.5) / 4 + dense / 1000
        return TrialResult("finished", value, run_dir=str(job.out_dir), step=3, duration_s=0.1)


@pytest.fixture(scope="module")
def sweep_dir(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import io

    from rich.console import Console

    from dlx.sweep.worker import run_sweep

    tmp = tmp_path_factory.mktemp("report-sweep")
    return run_sweep(
        [
            *TINY,
            f"outputs.dir={tmp}",
            "optim.lr=tag(log, interval(1e-4, 1e-1))",
            "model.dense=choice(8,16,32)",
            "sweep=optuna",
            "sweep.trials=10",
            "sweep.startup=10",
        ],
        runner=ScoreRunner(),
        console=Console(file=io.StringIO(), width=200),
    )


@pytest.fixture(scope="module")
def browser():
    exe = chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: `make test` installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class Loaded:
    def __init__(self, page: Any, errors: list[str], requests: list[str]) -> None:
        self.page, self.errors, self.requests = page, errors, requests

    def count(self, selector: str) -> int:
        return self.page.locator(selector).count()

    def values(self, selector: str) -> list[float]:
        return [
            float(v)
            for v in self.page.eval_on_selector_all(
                selector, "els => els.map(e => e.getAttribute('data-v'))"
            )
        ]

    def shot(self, tmp: Path, name: str) -> None:
        path = tmp / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        SHOTS.mkdir(exist_ok=True)
        shutil.copy(path, SHOTS / f"{name}.png")


def load(browser: Any, path: Path) -> Loaded:
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "request",
        lambda r: None if r.url.startswith(("file:", "data:")) else requests.append(r.url),
    )
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=10_000)
    return Loaded(page, errors, requests)


def report(cli, *args: str) -> None:
    result = cli("report", *args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("wrote ")


def no_external_urls(path: Path) -> None:
    text = path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "@import" not in text


# ----- the three kinds -----------------------------------------------------------------------


def test_run_report_in_the_browser(cli, runs, browser, tmp_path: Path) -> None:
    run = runs["full"]
    out = tmp_path / "run.html"
    before = sorted(p.name for p in run.iterdir())
    report(cli, str(run), "--out", str(out))
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written into the run
    no_external_urls(out)
    v = load(browser, out)
    assert v.errors == [] and v.requests == []
    summary = json.loads((run / "summary.json").read_text())
    # One uPlot canvas per chart: loss, accuracy, grad_norm, samples/s, learning rate.
    charts = json.loads(v.page.locator("#dlx-data").text_content())["charts"]
    assert {c["title"] for c in charts} >= {"loss", "accuracy", "learning rate"}
    assert v.count(".chart .uplot canvas") == len(charts)
    # The summary table shows summary.json's numbers exactly.
    for key in ("test/accuracy", "test/loss", "val/accuracy"):
        row = v.page.locator("table.summary tr", has=v.page.locator(f"th:text-is('{key}')"))
        got = float(row.locator("td").get_attribute("data-v"))
        want = summary["test" if key.startswith("test") else "val"][key]
        assert got == want
    assert "finished" in v.page.locator("#run .status").text_content()
    assert "dlx train recipe=digits" in v.page.locator("#run pre.code").text_content()
    # Hovering a chart shows the values under the cursor in its legend.
    over = v.page.locator(".chart .u-over").first
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    over.hover(position={"x": box["width"] * 0.6, "y": box["height"] / 2})
    legend = v.page.locator(".chart").first.locator(".u-series .u-value").nth(1).text_content()
    assert re.fullmatch(r"-?[\d.e+-]+", legend.strip()), legend
    # dlx eval's per-class rows and confusion matrix (rows sum to the examples evaluated).
    (ev,) = run.glob("eval_test_*.json")
    rec = json.loads(ev.read_text())
    assert v.count("table.per-class tbody tr") == len(rec["per_class"]) == 10
    cm = v.values("table.confusion tbody td")
    assert len(cm) == 100 and sum(cm) == rec["data"]["examples"]
    # Whatever else the run has: explain figures and tables, R matrix, sample grids.
    assert v.page.locator("#explain img").first.get_attribute("src").startswith("data:image/png")
    assert v.count("#explain table.sortable tbody tr") == 2
    assert v.values("table.continual tbody td") == [0.99, 0.1, 0.6, 0.97]
    assert v.count("#samples figure.grid img") == 2
    assert "config.yaml" in v.page.locator("#config").text_content()
    v.shot(tmp_path, "run")


def test_report_shows_only_what_a_run_has(cli, runs, browser, tmp_path: Path) -> None:
    out = tmp_path / "plain.html"
    report(cli, str(runs["second"]), "--out", str(out))
    v = load(browser, out)
    assert v.errors == []
    for absent in ("#evals", "#explain", "#continual", "#samples"):
        assert v.count(absent) == 0
    assert v.count("#curves .uplot") >= 2


def test_several_runs_overlaid_and_toggled(cli, runs, browser, tmp_path: Path) -> None:
    out = tmp_path / "runs.html"
    report(cli, str(runs["first"]), str(runs["second"]), "--out", str(out))
    no_external_urls(out)
    v = load(browser, out)
    assert v.errors == [] and v.requests == []
    assert v.count("#runs-table tbody tr") == 2
    headers = v.page.eval_on_selector_all("#runs-table thead th", "e => e.map(x => x.textContent)")
    assert "optim.lr" in headers  # the one config key the two runs differ in
    lr_col = headers.index("optim.lr")
    lrs = [
        v.page.locator("#runs-table tbody tr").nth(i).locator("td").nth(lr_col).text_content()
        for i in range(2)
    ]
    assert lrs == ["0.003", "0.01"]
    test_col = headers.index("test/accuracy")
    for i, run in enumerate((runs["first"], runs["second"])):
        want = json.loads((run / "summary.json").read_text())["test"]["test/accuracy"]
        td = v.page.locator("#runs-table tbody tr").nth(i).locator("td").nth(test_col)
        assert float(td.get_attribute("data-v")) == want
    charts = json.loads(v.page.locator("#dlx-data").text_content())["charts"]
    assert {"val/accuracy", "val/loss", "train/loss"} <= {c["title"] for c in charts}
    assert all(len(c["series"]) == 2 for c in charts)
    assert v.count(".chart .uplot") == len(charts)
    # Unticking a run hides its line in every chart.
    v.page.locator("#run-toggles input[data-run='1']").uncheck()
    off = v.page.eval_on_selector_all(
        ".chart",
        "cs => cs.map(c => c.querySelectorAll('.u-series')[2].classList.contains('u-off'))",
    )
    assert off == [True] * len(charts)
    v.page.locator("#run-toggles input[data-run='1']").check()
    v.shot(tmp_path, "runs")


def test_sweep_report_in_the_browser(cli, sweep_dir, browser, tmp_path: Path) -> None:
    out = tmp_path / "sweep.html"
    report(cli, str(sweep_dir), "--out", str(out))
    no_external_urls(out)
    v = load(browser, out)
    assert v.errors == [] and v.requests == []
    trials = rows_from_file(sweep_dir / "trials.jsonl")
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    assert v.count("#trials-table tbody tr") == len(trials) == 10
    assert v.values(".best-value b") == [best["value"]]
    assert best["command"] in v.page.locator("#best pre.code").text_content()
    scored = [t for t in trials if t["value"] is not None]
    assert v.count("#parcoords polyline") == len(scored) == 9
    assert v.count("#history .uplot canvas") == 1
    imp = v.values("#importances .bar-value")
    assert len(imp) == 2 and sum(imp) == pytest.approx(1.0, abs=1e-6)
    # Sorting: by the metric (empty cells of failed trials last), then reversed, then by trial.
    headers = v.page.eval_on_selector_all(
        "#trials-table thead th", "e => e.map(x => x.textContent)"
    )
    metric = headers.index("val/accuracy")

    def column(i: int) -> list[str | None]:
        return v.page.eval_on_selector_all(
            f"#trials-table tbody tr td:nth-child({i + 1})",
            "tds => tds.map(td => td.getAttribute('data-v'))",
        )

    assert column(0) == [str(t["trial"]) for t in trials]
    v.page.locator("#trials-table thead th").nth(metric).click()
    up = column(metric)
    nums = [float(x) for x in up if x is not None]
    assert nums == sorted(nums) and up[-1] is None
    v.page.locator("#trials-table thead th").nth(metric).click()
    down = [float(x) for x in column(metric) if x is not None]
    assert down == sorted(nums, reverse=True)
    assert float(column(metric)[0]) == best["value"]
    v.page.locator("#trials-table thead th").nth(0).click()
    assert [int(x) for x in column(0)] == sorted(t["trial"] for t in trials)
    # Hovering a parallel-coordinates line names its trial.
    svg = v.page.locator("#parcoords svg")
    svg.scroll_into_view_if_needed()
    origin = svg.bounding_box()
    points = v.page.locator("#parcoords polyline").last.get_attribute("points").split()
    (x0, y0), (x1, y1) = (map(float, p.split(",")) for p in points[:2])
    v.page.mouse.move(origin["x"] + (x0 + x1) / 2, origin["y"] + (y0 + y1) / 2)
    assert v.page.locator(".pc-tip").text_content().startswith("trial ")
    v.shot(tmp_path, "sweep")


# ----- bad input, what ships ---------------------------------------------------------------


def test_bad_input_is_one_message_and_exit_2(cli, runs, sweep_dir, tmp_path: Path) -> None:
    run = str(runs["first"])
    cases = [
        ((str(tmp_path / "nope"),), "does not exist"),
        ((str(runs["first"] / "config.yaml"),), "is a file"),
        ((str(tmp_path),), "holds no run"),
        ((run, "--out", str(tmp_path / "missing" / "r.html")), "does not exist"),
        ((run, "--out", str(tmp_path / "r.png")), "must end in .html"),
        ((run, "--out", str(tmp_path)), "is a folder"),
        ((str(sweep_dir), run), "a sweep is reported on its own"),
    ]
    for args, needle in cases:
        args = args if "--out" in args else (*args, "--out", str(tmp_path / "r.html"))
        result = cli("report", *args)
        text = " ".join(result.output.split())  # rich wraps long paths
        assert result.exit_code == 2, (args, text)
        assert needle in text and "fix:" in text and "Traceback" not in text, text
    assert not (tmp_path / "missing").exists() and not (tmp_path / "r.html").exists()


def test_a_folder_of_runs_and_a_half_written_run(cli, runs, tmp_path: Path) -> None:
    from dlx.report.collect import collect_run

    out = tmp_path / "all.html"
    report(cli, str(runs["root"]), "--out", str(out))
    assert "2 runs" in out.read_text()
    # A run still writing: a torn last line in metrics.jsonl, no summary fields yet.
    run = tmp_path / "digits" / "2026-01-01_00-00-00_abcd"
    run.mkdir(parents=True)
    shutil.copy(runs["first"] / "config.yaml", run)
    lines = (runs["first"] / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:4]) + '\n{"step": 9, "train/lo')
    data = collect_run(run)
    assert data["status"] == "unknown" and data["series"]["train/loss"]
    report(cli, str(run), "--out", str(tmp_path / "partial.html"))


def test_the_wheel_carries_the_vendored_chart_library() -> None:
    from hatchling.builders.wheel import WheelBuilder

    files = {f.distribution_path for f in WheelBuilder(str(ROOT)).recurse_included_files()}
    for name in ("uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE"):
        assert f"dlx/report/vendor/{name}" in files
    assert {"dlx/report/static/report.js", "dlx/report/static/report.css"} <= files


def test_a_continual_runs_per_task_curves_share_one_chart(runs) -> None:
    from dlx.report.collect import collect_run
    from dlx.report.html import render_run

    run = collect_run(runs["first"])
    for task in range(3):
        run["series"][f"test/task{task}_accuracy"] = [(4, 0.5 + task / 10), (8, 0.6)]
    *_, data = render_run(run, "now")
    (chart,) = [c for c in data["charts"] if c["title"] == "accuracy per task"]
    assert [s["label"] for s in chart["series"]] == [f"test/task{t}_accuracy" for t in range(3)]
    assert not any(c["title"].startswith("task") for c in data["charts"])
