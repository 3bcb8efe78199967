"""A run's report: one HTML file to look at its scores, pictures, explain panels and failures.

``write_report(rows, "report.html")`` in a script, ``Report(rows)`` in a notebook (it renders itself in the
output cell), ``dgiqa report ROWS... --out report.html`` on the command line. See docs/report.md.
"""

from __future__ import annotations

from dgiqa_cli.report.build import EXTREMES, SELF_CONTAINED_LIMIT, Report, write_report
from dgiqa_cli.report.runs import MixedRunsError, ReportError, RowsError, check_one_run, read_rows

__all__ = [
    "EXTREMES",
    "SELF_CONTAINED_LIMIT",
    "MixedRunsError",
    "Report",
    "ReportError",
    "RowsError",
    "check_one_run",
    "read_rows",
    "write_report",
]
