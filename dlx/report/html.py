"""Render the collected data (dlx/report/collect.py, sweep.py) as one HTML page: a run, several
runs side by side, or a sweep. Charts are drawn in the browser by the vendored uPlot from the
page's inline JSON; tables, images and the rest are plain HTML."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dlx.report.collect import SPLITS, aligned, curve_names, run_label
from dlx.report.page import (
    cell,
    chart_div,
    code,
    color,
    esc,
    fmt,
    kv_table,
    matrix_table,
    section,
    table,
)
from dlx.report.sweep import cat_text

SKIP_SUMMARY = {"plots", "run_dir", "pid", "host", "updated", "diverged_reason"}


# ----- charts (specs the page's JS hands to uPlot) -----------------------------------------


def _chart(
    charts: list[dict[str, Any]],
    title: str,
    lines: Sequence[tuple[str, list[tuple[int, float]], dict[str, Any]]],
    xlabel: str = "step",
) -> str:
    lines = [ln for ln in lines if ln[1]]
    if not lines:
        return ""
    xs, cols = aligned([(name, pts) for name, pts, _ in lines])
    chart_id = f"c{len(charts)}"
    charts.append(
        {
            "id": chart_id,
            "title": title,
            "xlabel": xlabel,
            "x": xs,
            "series": [
                {"label": name, "values": col, **style}
                for (name, _, style), col in zip(lines, cols, strict=True)
            ],
        }
    )
    return chart_div(chart_id)


def _run_curves(run: dict[str, Any], charts: list[dict[str, Any]]) -> str:
    s = run["series"]
    out = []
    names = curve_names(list(s))
    # A continual run's per-task metrics (task0_accuracy, task1_accuracy, ...): one chart per
    # metric with a line per task, not a chart per task.
    per_task: dict[str, list[tuple[int, str]]] = {}
    for name in names:
        if m := re.fullmatch(r"task(\d+)_(.+)", name):
            per_task.setdefault(m.group(2), []).append((int(m.group(1)), name))
    for name in names:
        if re.fullmatch(r"task\d+_.+", name):
            continue
        lines = [
            (f"train/{name}", s.get(f"train/{name}", []), {"color": color(0), "style": "line"}),
            (f"val/{name}", s.get(f"val/{name}", []), {"color": color(1), "style": "linepoints"}),
            (f"test/{name}", s.get(f"test/{name}", []), {"color": color(2), "style": "points"}),
        ]
        out.append(_chart(charts, name, lines))
    for metric, tasks in per_task.items():
        lines = [
            (
                f"{split}/{name}",
                s.get(f"{split}/{name}", []),
                {"color": color(i), "style": "linepoints"},
            )
            for i, (_, name) in enumerate(sorted(tasks))
            for split in SPLITS
            if s.get(f"{split}/{name}")
        ]
        out.append(_chart(charts, f"{metric} per task", lines))
    if s.get("train/samples_per_sec"):
        style = {"color": color(4), "style": "line"}
        out.append(
            _chart(
                charts, "samples/s", [("train/samples_per_sec", s["train/samples_per_sec"], style)]
            )
        )
    return "".join(out)


def _thinned_note(run: dict[str, Any]) -> str:
    thinned = [k for k, n in run["counts"].items() if n > len(run["series"].get(k, []))]
    if not thinned:
        return ""
    return f"Long curves are thinned to {len(run['series'][thinned[0]])} points for the page."


# ----- one run -----------------------------------------------------------------------------


def _summary_pairs(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    pairs = []
    for key, value in summary.items():
        if key in SKIP_SUMMARY:
            continue
        if isinstance(value, dict):
            for k, v in value.items():
                name = k if key in ("val", "test") else f"{key}.{k}"
                pairs.append((name, v))
        else:
            pairs.append((key, value))
    return pairs


def _status(status: str) -> str:
    return f'<span class="status status-{esc(status)}">{esc(status)}</span>'


def _evals(evals: list[dict[str, Any]]) -> str:
    parts = []
    for ev in evals:
        title = f"{ev.get('split')} split, step {ev.get('step')} ({ev.get('kind')})"
        data = ev.get("data") or {}
        about = f"{ev['file']}: {data.get('name', '')}, {data.get('examples', '?')} examples"
        if ev.get("overrides"):
            about += ", overrides " + " ".join(map(str, ev["overrides"]))
        body = [f'<p class="note">{esc(about)}</p>', kv_table(list(ev["metrics"].items()))]
        if ev.get("per_class"):
            keys = [k for k in ("class", "precision", "recall", "f1", "support")]
            rows = [[r.get(k) for k in keys] for r in ev["per_class"]]
            body.append("<h4>per class</h4>" + table(keys, rows, sortable=True, cls="per-class"))
        cm = ev.get("confusion")
        if cm:
            names = [str(i) for i in range(len(cm))]
            body.append(
                "<h4>confusion matrix (rows: true, columns: predicted)</h4>"
                + matrix_table(cm, names, names, corner="true \\ pred", cls="matrix confusion")
            )
        parts.append(f'<div class="eval"><h3>{esc(title)}</h3>{"".join(body)}</div>')
    return section("Evaluations (dlx eval)", "".join(parts), id_="evals") if parts else ""


def _continual(c: dict[str, Any] | None) -> str:
    if not c:
        return ""
    tasks = [str(t) for t in c["tasks"]]
    rows = [f"after {t}" for t in tasks]
    body = [
        kv_table([(k, v) for k, v in [*c["about"].items(), *c["scores"].items()] if v is not None]),
        f'<p class="note">{esc(c.get("definition") or "")}</p>',
        matrix_table(c["R"], rows, tasks, corner="R[i][j]", cls="matrix continual"),
    ]
    if c.get("init"):
        body.append("<h4>accuracy before training</h4>" + table(tasks, [c["init"]], cls="init"))
    return section("Continual learning: accuracy matrix R", "".join(body), id_="continual")


def _rows_table(key: str, rows: list[tuple[str | None, dict[str, Any]]]) -> tuple[str, bool]:
    """A sortable table of the rows' scalar fields; True when some fields were left out."""
    cols = list(dict.fromkeys(k for _, v in rows for k in v))
    flat = [c for c in cols if all(not isinstance(v.get(c), dict | list) for _, v in rows)]
    if not flat:
        return "", True
    named = rows[0][0] is not None
    headers = ["", *flat] if named else flat
    body = [[*([name] if named else []), *(v.get(c) for c in flat)] for name, v in rows]
    return f"<h4>{esc(key)}</h4>" + table(headers, body, sortable=True), len(flat) < len(cols)


def _json_tables(doc: Any) -> str:
    """A JSON file shown as tables where it has rows (a list of dicts, or a dict of dicts: their
    scalar fields), its scalars as a key/value table, the rest as indented JSON."""
    if not isinstance(doc, dict):
        return code(json.dumps(doc, indent=1)[:20000])
    scalars, parts, rest = [], [], {}
    for key, value in doc.items():
        rows: list[tuple[str | None, dict[str, Any]]] = []
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            rows = [(None, v) for v in value]
        elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            rows = [(str(k), v) for k, v in value.items()]
        if rows:
            html_, partial = _rows_table(key, rows)
            parts.append(html_)
            if partial:
                rest[key] = value
        elif isinstance(value, dict | list):
            rest[key] = value
        else:
            scalars.append((key, value))
    out = (kv_table(scalars) if scalars else "") + "".join(parts)
    if rest:
        text = json.dumps(rest, indent=1)
        out += f"<details><summary>the rest (JSON)</summary>{code(text[:20000])}</details>"
    return out


def _explain(e: dict[str, Any] | None) -> str:
    if not e:
        return ""
    body = [
        f'<figure><img src="{f["src"]}" alt="{esc(f["name"])}"><figcaption>explain/'
        f"{esc(f['name'])}</figcaption></figure>"
        for f in e["figures"]
    ]
    for name, doc in e["json"].items():
        body.append(f'<div class="json-doc"><h3>explain/{esc(name)}</h3>{_json_tables(doc)}</div>')
    return section("Explanations (dlx explain)", "".join(body), id_="explain")


def _samples(s: dict[str, Any] | None) -> str:
    if not s:
        return ""
    body = []
    for g in s["grids"]:
        hist = g.get("histogram")
        cap = f"epoch {g['epoch']} ({g['name']})"
        if isinstance(hist, dict):
            cap += ": " + ", ".join(f"{k} {fmt(v)}" for k, v in list(hist.items())[:6])
        body.append(
            f'<figure class="grid"><img src="{g["src"]}" alt="{esc(g["name"])}">'
            f"<figcaption>{esc(cap)}</figcaption></figure>"
        )
    note = ""
    if s["total"] > len(s["grids"]):
        note = f"the last {len(s['grids'])} of {s['total']} epochs' grids"
    if isinstance(s.get("quality"), dict):
        body.append("<h4>quality.json (real test vs real val: the floor)</h4>")
        body.append(_json_tables(s["quality"]))
    return section("Generated samples", "".join(body), id_="samples", note=note)


def _images(images: list[dict[str, str]]) -> str:
    if not images:
        return ""
    body = "".join(
        f'<figure><img src="{i["src"]}" alt="{esc(i["name"])}"><figcaption>{esc(i["name"])}'
        "</figcaption></figure>"
        for i in images
    )
    return section("Other figures", body, id_="figures")


def _config(run: dict[str, Any]) -> str:
    meta = run["meta"]
    pairs = [(k, v) for k, v in meta.items() if not isinstance(v, dict | list)]
    git = meta.get("git") or {}
    if git:
        pairs.insert(0, ("git", f"{git.get('sha', '')}{' (dirty)' if git.get('dirty') else ''}"))
    if meta.get("devices"):
        pairs.append(("devices", ", ".join(map(str, meta["devices"]))))
    pkgs = meta.get("packages") or {}
    body = (
        f"<details open><summary>config.yaml</summary>{code(run['config_text'])}</details>"
        + (f"<details><summary>meta.json</summary>{kv_table(pairs)}" if pairs else "")
        + (kv_table(list(pkgs.items())) if pkgs else "")
        + ("</details>" if pairs else "")
    )
    return section("Config", body, id_="config")


def render_run(run: dict[str, Any], generated: str) -> tuple[str, str, dict[str, Any]]:
    charts: list[dict[str, Any]] = []
    head = [f"<p>{_status(run['status'])} <code>{esc(run['dir'])}</code></p>"]
    if run["command"]:
        head.append("<h3>command</h3>" + code(run["command"]))
    if run["status"] == "running":
        head.append('<p class="note">The run is still training: this is a snapshot.</p>')
    parts = [section(run["label"], "".join(head), id_="run")]
    if run["summary"]:
        parts.append(
            section(
                "Summary (summary.json)",
                kv_table(_summary_pairs(run["summary"]), "kv summary"),
                id_="summary",
            )
        )
    curves = _run_curves(run, charts)
    if curves:
        parts.append(section("Learning curves", curves, id_="curves", note=_thinned_note(run)))
    lr = run["series"].get("train/lr")
    if lr:
        parts.append(
            section(
                "Learning-rate schedule",
                _chart(
                    charts,
                    "learning rate",
                    [("train/lr", lr, {"color": color(3), "style": "line"})],
                ),
                id_="lr",
            )
        )
    parts += [
        _evals(run["evals"]),
        _continual(run["continual"]),
        _explain(run["explain"]),
        _samples(run["samples"]),
        _images(run["images"]),
        _config(run),
        _notes(run["notes"]),
    ]
    title = f"dlx run {run['recipe']}/{run['name']}"
    return title, "".join(parts), {"charts": charts, "runs": []}


def _notes(notes: list[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return section("Notes", f"<ul>{items}</ul>", id_="notes")


# ----- several runs ------------------------------------------------------------------------

IGNORED_DIFF = ("outputs.", "trainer.progress")
MAX_DIFF_COLUMNS = 10


def differing_keys(runs: Sequence[dict[str, Any]]) -> list[str]:
    keys = list(dict.fromkeys(k for r in runs for k in r["config"]))
    out = []
    for k in keys:
        if k.startswith(IGNORED_DIFF):
            continue
        values = {json.dumps(r["config"].get(k, "<absent>"), sort_keys=True) for r in runs}
        if len(values) > 1:
            out.append(k)
    return out


def _best(summary: dict[str, Any]) -> tuple[str, Any, Any]:
    best = summary.get("best") or {}
    for k, v in best.items():
        if "/" in k:
            return k, v, best.get("step")
    return "", None, None


def _short_labels(runs: list[dict[str, Any]]) -> None:
    """Label each run by `recipe/<id>` and only the overrides not every run was given."""
    shared = set.intersection(*(set(r["overrides"]) for r in runs)) if runs else set()
    for r in runs:
        own = [o for o in r["overrides"] if o not in shared]
        r["label"] = run_label(Path(r["dir"]), own)


def render_compare(runs: list[dict[str, Any]], generated: str) -> tuple[str, str, dict[str, Any]]:
    charts: list[dict[str, Any]] = []
    _short_labels(runs)
    diff = differing_keys(runs)
    test_keys = list(
        dict.fromkeys(
            k for r in runs for k in (r["summary"].get("test") or {}) if not k.endswith("/count")
        )
    )
    best_names = list(dict.fromkeys(_best(r["summary"])[0] for r in runs if _best(r["summary"])[0]))
    shown = diff[:MAX_DIFF_COLUMNS]  # all of them are in the "differ" table below
    headers = ["", "run", *shown, "status"]
    headers += [f"best {n}" for n in best_names] + ["best step", "steps", *test_keys, "wall time s"]
    rows = []
    for i, r in enumerate(runs):
        s = r["summary"]
        name, value, step = _best(s)
        tds = [
            f'<td><span class="swatch" style="background:{color(i)}"></span></td>',
            f'<td class="run" title="{esc(r["dir"])}">{esc(r["label"])}</td>',
            *(cell(r["config"].get(k)) for k in shown),
            f"<td>{_status(r['status'])}</td>",
            *(cell(value if n == name else None) for n in best_names),
            cell(step),
            cell(s.get("steps")),
            *(cell((s.get("test") or {}).get(k)) for k in test_keys),
            cell(s.get("wall_time_s")),
        ]
        rows.append(tds)
    toggles = "".join(
        f'<label class="toggle"><input type="checkbox" checked data-run="{i}">'
        f'<span class="swatch" style="background:{color(i)}"></span>{esc(r["label"])}</label>'
        for i, r in enumerate(runs)
    )
    parts = [
        section(
            f"{len(runs)} runs",
            f'<div class="toggles" id="run-toggles">{toggles}</div>'
            '<p class="note">Untick a run to hide it in every chart; click a column header to '
            "sort.</p>"
            + table(headers, rows, sortable=True, raw=True, id_="runs-table", cls="runs"),
            id_="runs",
        )
    ]
    keys = list(dict.fromkeys(k for r in runs for k in r["series"]))
    wanted = [
        k for name in curve_names(keys) for k in (f"val/{name}", f"train/{name}") if k in keys
    ]
    if "train/lr" in keys:
        wanted.append("train/lr")
    curves = []
    for key in wanted:
        lines = [
            (
                r["label"],
                r["series"].get(key, []),
                {
                    "color": color(i),
                    "style": "linepoints" if key.startswith("val/") else "line",
                    "run": i,
                },
            )
            for i, r in enumerate(runs)
        ]
        curves.append(_chart(charts, key, lines))
    if curves:
        parts.append(section("Curves", "".join(curves), id_="curves"))
    if not diff:
        parts.append('<p class="note">The runs\' configs are the same (outputs aside).</p>')
    cfg_rows = [[k, *(r["config"].get(k) for r in runs)] for k in diff]
    if cfg_rows:
        parts.append(
            section(
                "Config keys that differ",
                table(["key", *(r["label"] for r in runs)], cfg_rows, cls="diff"),
                id_="diff",
            )
        )
    commands = "".join(f"<h4>{esc(r['label'])}</h4>{code(r['command'] or r['dir'])}" for r in runs)
    parts.append(section("Commands", commands, id_="commands"))
    parts.append(_notes([f"{r['name']}: {n}" for r in runs for n in r["notes"]]))
    runs_data = [{"label": r["label"], "color": color(i)} for i, r in enumerate(runs)]
    return f"dlx report: {len(runs)} runs", "".join(parts), {"charts": charts, "runs": runs_data}


# ----- a sweep -----------------------------------------------------------------------------


def _importances(imp: Any) -> str:
    if isinstance(imp, str):
        return f'<p class="note">Parameter importances: {esc(imp)}</p>'
    if not imp:
        return ""
    top = max(imp.values()) or 1.0
    rows = "".join(
        f'<div class="bar-row"><span class="bar-label">{esc(k)}</span>'
        f'<span class="bar" style="width:{max(0.5, 100 * v / top):.1f}%"></span>'
        f'<span class="bar-value" data-v="{v!r}">{v:.3f}</span></div>'
        for k, v in sorted(imp.items(), key=lambda kv: -kv[1])
    )
    return (
        f'<div class="importances" id="importances">{rows}</div>'
        '<p class="note">fANOVA (Optuna\'s default importance evaluator, seed 0) over the '
        "finished trials: the share of the metric's variance each parameter explains.</p>"
    )


def _axis_value(axis: dict[str, Any], value: Any) -> Any:
    """A categorical axis takes the index of the value among its categories."""
    if axis.get("type") != "cat":
        return value
    cats = axis.get("cats") or []
    text = cat_text(value)
    return cats.index(text) if text in cats else None


def render_sweep(sw: dict[str, Any], generated: str) -> tuple[str, str, dict[str, Any]]:
    charts: list[dict[str, Any]] = []
    metric, keys = sw["metric"], sw["keys"]
    counts = ", ".join(f"{n} {k}" for k, n in sorted(sw["counts"].items()))
    spec = sw["spec"]
    head = [
        kv_table(
            [
                ("type", spec.get("type")),
                ("metric", f"{metric} ({sw['direction']})"),
                ("trials", f"{len(sw['trials'])} of {spec.get('trials')}: {counts}"),
                ("space", ", ".join(f"{k}={v}" for k, v in sw["space"].items())),
                ("fixed", " ".join(map(str, sw["fixed"]))),
                ("dir", sw["dir"]),
            ]
        )
    ]
    if spec.get("command"):
        head.append("<h3>sweep command</h3>" + code(spec["command"]))
    parts = [section(f"sweep {sw['name']}", "".join(head), id_="sweep")]
    best = sw["best"]
    if best:
        body = (
            f'<p class="best-value">{esc(metric)} = <b data-v="{best.get("value")!r}">'
            f"{esc(fmt(best.get('value')))}</b> (trial {esc(best.get('trial'))})</p>"
            + kv_table(list((best.get("params") or {}).items()))
            + "<h3>reproduce it</h3>"
            + code(best.get("command") or "")
            + (
                f'<p class="note">run dir: {esc(best.get("run_dir"))}</p>'
                if best.get("run_dir")
                else ""
            )
        )
        parts.append(section("Best trial", body, id_="best"))
    h = sw["history"]
    if any(v is not None for v in h["finished"] + h["pruned"]):
        chart_id = f"c{len(charts)}"
        charts.append(
            {
                "id": chart_id,
                "title": f"{metric} by trial",
                "xlabel": "trial",
                "x": h["x"],
                "series": [
                    {
                        "label": "finished",
                        "values": h["finished"],
                        "color": color(0),
                        "style": "points",
                    },
                    {
                        "label": "pruned",
                        "values": h["pruned"],
                        "color": color(3),
                        "style": "points",
                    },
                    {"label": "best so far", "values": h["best"], "color": "#000", "style": "step"},
                ],
            }
        )
        parts.append(section("History", chart_div(chart_id), id_="history"))
    scored = [t for t in sw["trials"] if t["value"] is not None]
    axes = sw["axes"] if len(sw["axes"]) == len(keys) else [{"type": "linear"}] * len(keys)
    parcoords = None
    if scored and keys:
        parcoords = {
            "axes": axes,
            "metric": metric,
            "maximize": sw["direction"] == "max",
            "rows": [
                {
                    "trial": t["trial"],
                    "status": t["status"],
                    "values": [
                        _axis_value(a, t["params"].get(k)) for a, k in zip(axes, keys, strict=True)
                    ],
                    "value": t["value"],
                }
                for t in scored
            ],
        }
        parts.append(
            section(
                "Parallel coordinates",
                '<div id="parcoords" class="parcoords"></div>',
                id_="parallel",
                note="One line per scored trial (pruned dashed), coloured by the metric; "
                "hover a line for its values.",
            )
        )
    parts.append(
        section("Parameter importances", _importances(sw["importances"]) or "", id_="importance")
    )
    headers = ["trial", "status", *keys, metric, "step", "time s", "error"]
    rows = [
        [
            cell(t["trial"]),
            f"<td>{_status(t['status'] or '')}</td>",
            *(cell(t["params"].get(k)) for k in keys),
            cell(t["value"], cls="metric"),
            cell(t["step"]),
            cell(t["duration_s"]),
            f'<td class="error">{esc(t["error"] or "")}</td>',
        ]
        for t in sw["trials"]
    ]
    parts.append(
        section(
            "Trials",
            table(headers, rows, sortable=True, raw=True, id_="trials-table", cls="trials"),
            id_="trials",
            note="Click a column header to sort (again to reverse).",
        )
    )
    parts.append(_notes(sw["notes"]))
    return (
        f"dlx sweep {sw['name']}",
        "".join(parts),
        {"charts": charts, "runs": [], "parcoords": parcoords},
    )
