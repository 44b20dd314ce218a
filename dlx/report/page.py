"""HTML building blocks for the report: escaping, number formats, tables, the page shell
that inlines the vendored uPlot, the report's own JS and CSS, and the page data as JSON."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from importlib import resources
from typing import Any

PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
)


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value: Any) -> str:
    """Numbers the way a table shows them: 4 significant digits, ints as they are."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.6g}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def cell(value: Any, sort: Any = None, cls: str = "", title: str = "") -> str:
    """A <td>; numbers carry data-v (the exact value) for sorting and for tests."""
    attrs = []
    v = value if sort is None else sort
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        attrs.append(f'data-v="{v!r}"')
        cls = (cls + " num").strip()
    if cls:
        attrs.append(f'class="{cls}"')
    if title:
        attrs.append(f'title="{esc(title)}"')
    return (
        f"<td {' '.join(attrs)}>{esc(fmt(value))}</td>" if attrs else f"<td>{esc(fmt(value))}</td>"
    )


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    sortable: bool = False,
    cls: str = "",
    id_: str = "",
    raw: bool = False,
) -> str:
    """rows: values (formatted here) or, with raw=True, ready <td> strings."""
    classes = " ".join(c for c in ("sortable" if sortable else "", cls) if c)
    attrs = (f' class="{classes}"' if classes else "") + (f' id="{esc(id_)}"' if id_ else "")
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(c if raw else cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_table(pairs: Sequence[tuple[str, Any]], cls: str = "kv") -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th>{cell(v)}</tr>" for k, v in pairs)
    return f'<table class="{cls}"><tbody>{rows}</tbody></table>'


def heat(value: float | None, lo: float, hi: float) -> str:
    """A background colour for a heat-map cell (white to blue)."""
    if value is None or hi <= lo:
        return ""
    t = max(0.0, min(1.0, (value - lo) / (hi - lo)))
    r, g, b = (int(255 - t * (255 - c)) for c in (33, 102, 172))
    ink = "#fff" if t > 0.6 else "#000"
    return f"background:rgb({r},{g},{b});color:{ink}"


def matrix_table(
    matrix: Sequence[Sequence[Any]],
    rows: Sequence[str],
    cols: Sequence[str],
    corner: str = "",
    cls: str = "matrix",
    digits: bool = False,
) -> str:
    flat = [v for r in matrix for v in r if isinstance(v, int | float)]
    lo, hi = (min(flat), max(flat)) if flat else (0.0, 1.0)
    if not digits:
        lo = min(lo, 0.0)
    head = f"<th>{esc(corner)}</th>" + "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = []
    for name, r in zip(rows, matrix, strict=False):
        tds = "".join(
            f'<td class="num" style="{heat(v, lo, hi)}"'
            + (f' data-v="{v!r}"' if isinstance(v, int | float) else "")
            + f">{esc(fmt(v))}</td>"
            for v in r
        )
        body.append(f"<tr><th>{esc(name)}</th>{tds}</tr>")
    return (
        f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def section(title: str, body: str, id_: str = "", note: str = "") -> str:
    anchor = f' id="{esc(id_)}"' if id_ else ""
    extra = f'<p class="note">{esc(note)}</p>' if note else ""
    return f"<section{anchor}><h2>{esc(title)}</h2>{extra}{body}</section>"


def chart_div(chart_id: str) -> str:
    return f'<div class="chart" data-chart="{esc(chart_id)}"></div>'


def code(text: str) -> str:
    return f'<pre class="code">{esc(text)}</pre>'


def _asset(name: str) -> str:
    return resources.files("dlx.report").joinpath(name).read_text(encoding="utf-8")


def _json_script(data: Any) -> str:
    # "</" would end the <script> element early; JSON allows the escaped form.
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def page(title: str, kind: str, body: str, data: dict[str, Any], generated: str) -> str:
    """The whole self-contained document: no external URL anywhere."""
    css = _asset("vendor/uPlot.min.css") + "\n" + _asset("static/report.css")
    js = _asset("vendor/uPlot.iife.min.js")
    own = _asset("static/report.js")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="dlx report">
<title>{esc(title)}</title>
<style>{css}</style>
</head>
<body data-kind="{esc(kind)}">
<header><h1>{esc(title)}</h1><p class="generated">dlx report, {esc(generated)}</p></header>
<main>
{body}
</main>
<script type="application/json" id="dlx-data">{_json_script(data)}</script>
<script>{js}</script>
<script>{own}</script>
</body>
</html>
"""
