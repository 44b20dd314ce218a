"""`dlx report`: one self-contained HTML file for a run, several runs or a sweep.

collect.py and sweep.py read the folders into plain data, html.py and page.py render it, and
static/ (the report's JS and CSS) plus vendor/ (uPlot, MIT) are inlined into the page, so the
file opens offline in any browser.
"""

from dlx.report.build import Report, build_report

__all__ = ["Report", "build_report"]
