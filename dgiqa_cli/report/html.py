"""The report as one HTML page: static parts rendered here (escaped), the gallery drawn by the page's own script.

The page holds its CSS, script and data inline and asks for nothing else: its Content-Security-Policy allows
no request at all (``default-src 'none'``), images only from ``data:`` URLs (and, for a large run, the files
beside the page), and only the one script whose hash it names, so a name that looks like markup stays text.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
from importlib import resources

from dgiqa_cli.io.names import printable
from dgiqa_cli.version import __version__

SETTINGS_SHOWN = (
    ("model", "weights"),
    ("weights_sha256", "weights sha256"),
    ("depth_model", "depth model"),
    ("crops", "crops"),
    ("crop_mode", "crop positions"),
    ("seed", "seed"),
    ("precision", "precision"),
    ("backend", "backend"),
)
BINS = 30
PLACEHOLDER = (
    "data:image/svg+xml;base64,"
    + base64.b64encode(
        b'<svg xmlns="http://www.w3.org/2000/svg" width="176" height="176"><rect width="176" height="176" '
        b'fill="#eceff3"/><text x="88" y="94" font-family="sans-serif" font-size="14" fill="#8a94a3" '
        b'text-anchor="middle">no picture</text></svg>'
    ).decode()
)


def data_url(data: bytes, kind: str = "image/webp") -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _finite(value):
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def script_json(data) -> str:
    """JSON that is safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` to end it early."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def histogram(scores: list[float]) -> tuple[dict, str]:
    """The scores' histogram (:data:`BINS` bars, quartiles dashed) as SVG, and its scale for the page's slider."""
    import numpy as np

    from dgiqa_cli.io.rows import score_summary

    values = np.asarray(scores, dtype=np.float64)
    counts, edges = np.histogram(values, bins=BINS)
    quartiles = score_summary(scores)
    lo, hi = float(edges[0]), float(edges[-1])
    digits = decimals(hi - lo)
    width, height, x0, top, bottom = 600, 160, 44, 10, 30
    tallest = max(int(counts.max()), 1)
    step = width / len(counts)
    parts = [
        f'<svg class="histogram" viewBox="0 0 {x0 + width + 16} {top + height + bottom}" width="{x0 + width + 16}" '
        f'height="{top + height + bottom}" role="img" aria-label="histogram of {len(scores)} scores">'
    ]
    for i, count in enumerate(counts):
        h = height * int(count) / tallest
        parts.append(
            f'<rect class="bar" x="{x0 + i * step:.2f}" y="{top + height - h:.2f}" width="{max(step - 1, 1):.2f}" '
            f'height="{h:.2f}" data-count="{int(count)}" data-lo="{edges[i]!r}" data-hi="{edges[i + 1]!r}">'
            f"<title>{edges[i]:.{digits}f}–{edges[i + 1]:.{digits}f}: {int(count)}</title></rect>"
        )
    for name in ("q1", "median", "q3"):
        x = x0 + (quartiles[name] - lo) / (hi - lo) * width
        parts.append(f'<line class="quartile" x1="{x:.2f}" x2="{x:.2f}" y1="{top}" y2="{top + height}"/>')
        parts.append(f'<text x="{x:.2f}" y="{top + 10}" text-anchor="middle">{name}</text>')
    parts.append(f'<line id="threshold-line" x1="{x0}" x2="{x0}" y1="{top}" y2="{top + height}"/>')
    for value, anchor in ((lo, "start"), (hi, "end")):
        x = x0 if anchor == "start" else x0 + width
        parts.append(f'<text x="{x}" y="{top + height + 16}" text-anchor="{anchor}">{value:.{digits}f}</text>')
    parts.append(f'<text x="{x0 - 6}" y="{top + 10}" text-anchor="end">{tallest}</text>')
    parts.append("</svg>")
    summary = ", ".join(f"{name} {value:.{digits}f}" for name, value in quartiles.items())
    parts.append(f'<div class="muted" id="quartiles">{html.escape(summary)}</div>')
    scale = {"lo": lo, "hi": hi, "median": quartiles["median"], "x0": x0, "width": width, "digits": digits}
    return scale, "\n".join(parts)


def decimals(span: float) -> int:
    """Enough decimals to tell scores apart across ``span`` (4 for DGIQA's usual spread, more for a narrow one)."""
    return min(10, max(4, 2 - math.floor(math.log10(span)))) if span > 0 else 4


def table(rows: list[tuple[str, str]], head: tuple[str, str] | None = None, cls: str = "") -> str:
    """A two-column table of text (escaped here)."""
    out = [f'<table class="{cls}">']
    if head:
        out.append(f"<tr><th>{html.escape(head[0])}</th><th>{html.escape(head[1])}</th></tr>")
    out.extend(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    out.append("</table>")
    return "".join(out)


def settings_table(settings: dict) -> str:
    shown = [(label, settings.get(key) or "–") for key, label in SETTINGS_SHOWN]
    shown.append(("report made by", f"dgiqa {__version__}"))
    return table([(k, printable(str(v))) for k, v in shown], cls="settings")


def counts_html(counts: dict) -> str:
    return "".join(f'<span id="count-{k}"><b>{v}</b> {html.escape(k)}</span>' for k, v in counts.items())


def failures_table(failures: list[tuple[str, str]]) -> str:
    if not failures:
        return '<p class="muted">No picture failed.</p>'
    return table([(printable(name), printable(why)) for name, why in failures], ("picture", "reason"), "failures")


def evaluation_html(evaluation: dict | None, scatter_png: bytes | None) -> str:
    """``dgiqa eval``'s metrics (its ``--json`` object) and scatter plot, beside the run's settings."""
    if not evaluation:
        return ""
    rows = []
    ci = evaluation.get("ci95") or {}
    for key, value in evaluation.items():
        if isinstance(value, float) and key != "n":
            interval = ci.get(key) if isinstance(ci, dict) else None
            text = f"{value:.4f}"
            if isinstance(interval, list | tuple) and len(interval) == 2 and None not in interval:
                text += f"  (95%: {interval[0]:.4f}–{interval[1]:.4f})"
            rows.append((key.upper(), text))
    rows.insert(0, ("pictures", str(evaluation.get("n", "–"))))
    title = f"{evaluation.get('dataset', '')} ({evaluation.get('split', '')})"
    out = ['<div class="evaluation">', f"<h3>{html.escape(printable(title))}</h3>"]
    out.append(table(rows, ("metric", "value"), "metrics"))
    out.append("</div>")
    if scatter_png:
        src = data_url(scatter_png, "image/png")
        out.append(f'<div class="scatter"><img alt="predicted score against rating" src="{src}"></div>')
    return "".join(out)


def page(
    *,
    title: str,
    subtitle: str,
    counts: dict,
    settings: dict,
    histogram_svg: str,
    failures: list[tuple[str, str]],
    missing_note: str,
    evaluation: str,
    data: dict,
    files_folder: str | None,
) -> str:
    """The whole page. ``files_folder``: where the thumbnails are, for a large run (beside the page)."""
    script = _asset("report.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    img_src = "data: blob:" + (" 'self' file:" if files_folder else "")
    parts = {
        "IMG_SRC": img_src,
        "SCRIPT_HASH": f"sha256-{digest}",
        "TITLE": html.escape(title),
        "SUBTITLE": html.escape(subtitle),
        "CSS": _asset("report.css"),
        "COUNTS": counts_html(counts),
        "SETTINGS": settings_table(settings),
        "EVALUATION": evaluation,
        "HISTOGRAM": histogram_svg,
        "MISSING": missing_note,
        "FAILURES": failures_table(failures),
        "DATA": script_json(data),
        "SCRIPT": script,
    }
    # One pass: what is put in is never read again for markers (a title may say anything).
    return re.sub(r"@@([A-Z_]+)@@", lambda match: parts[match.group(1)], _asset("report.html"))
