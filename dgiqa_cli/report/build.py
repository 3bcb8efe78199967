"""A report of one run, from its rows: the data the page shows, put together once, written as one HTML file.

Up to :data:`SELF_CONTAINED_LIMIT` pictures, every thumbnail is inside the file, which can be mailed or moved
alone. Beyond, thumbnails go to a ``<name>_files/`` folder beside it (still read from disk, never the network),
so that the page stays small enough to open at once; the gallery draws only the cards on screen either way.
"""

from __future__ import annotations

import datetime
import html
import os
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from dgiqa_cli.io.atomic import atomic_write
from dgiqa_cli.io.names import encode_path, printable
from dgiqa_cli.report import html as page
from dgiqa_cli.report.runs import ReportError, check_one_run
from dgiqa_cli.report.thumbnails import make_thumbnails

SELF_CONTAINED_LIMIT = 5000
EXTREMES = 24
Progress = Callable[[str, int, int], None]  # (stage, done, total)


class Report:
    """The report of ``rows`` (dicts with :data:`dgiqa_cli.io.rows.FIELDS`, as the rows readers give them).

    ``scorer`` + ``explain_worst``: explain panels for the N lowest-scoring pictures, made now with the model;
    ``heatmaps``: the ``--heatmaps`` folder of an earlier ``dgiqa batch``, whose panels are shown instead.
    ``extremes``: how many lowest and highest pictures get their own section. ``allow_mixed``: report rows of
    runs with different settings together (else :class:`~dgiqa_cli.report.MixedRunsError`). ``evaluation`` /
    ``scatter_png``: ``dgiqa eval``'s metrics (its ``--json`` object) and scatter plot. ``skipped``: pictures
    a resumed run found done. ``on_progress(stage, done, total)``: called as thumbnails and panels are made.
    In a notebook the object shows itself (``_repr_html_``).
    """

    def __init__(
        self,
        rows: list[dict],
        *,
        scorer=None,
        explain_worst: int = 0,
        heatmaps: str | os.PathLike | None = None,
        extremes: int = EXTREMES,
        allow_mixed: bool = False,
        title: str | None = None,
        sources: list[str] | None = None,
        evaluation: dict | None = None,
        scatter_png: bytes | None = None,
        skipped: int | None = None,
        workers: int | None = None,
        on_progress: Progress | None = None,
    ):
        if explain_worst and scorer is None:
            raise ReportError("explain panels made now (explain_worst) need a scorer")
        self.settings = check_one_run(rows, allow_mixed)
        by_path = {row["path"]: row for row in rows}  # a picture in two files of one run: its last row
        self.duplicates = len(rows) - len(by_path)
        self.rows = list(by_path.values())
        self.title = title or "dgiqa report"
        self.sources = sources or []
        self.evaluation, self.scatter_png = evaluation, scatter_png
        self.made = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        self.scored, self.failures = [], []
        for row in self.rows:
            if row.get("error") is None and _number(row.get("score")) is not None:
                self.scored.append(row)
            else:
                self.failures.append((row["path"], row.get("error") or "no score"))
        self.counts = {"scored": len(self.scored), "failed": len(self.failures)}
        if skipped is not None:
            self.counts["skipped"] = skipped
        progress = on_progress or (lambda stage, done, total: None)
        made = make_thumbnails(
            [row["path"] for row in self.scored], workers=workers, on_progress=lambda d, t: progress("Thumbnails", d, t)
        )
        self.thumbnails = {path: data for path, data in made.items() if isinstance(data, bytes)}
        self.notes = {path: f"picture not shown: {why}" for path, why in made.items() if isinstance(why, str)}
        ranked = sorted(self.scored, key=lambda row: row["score"])
        self.lowest = [row["path"] for row in ranked[:extremes]]
        self.highest = [row["path"] for row in reversed(ranked[-extremes:])] if extremes else []
        self.panels: dict[str, bytes] = {}
        if heatmaps is not None:
            from dgiqa_cli.report.panels import from_heatmaps

            self.panels.update(from_heatmaps(heatmaps, list(dict.fromkeys(self.lowest + self.highest))))
        if explain_worst:
            from dgiqa_cli.report.panels import from_model

            worst = [row["path"] for row in ranked[:explain_worst]]
            made_panels, failed = from_model(scorer, worst, lambda d, t: progress("Explain panels", d, t))
            self.panels.update(made_panels)
            for path, why in failed.items():
                self.notes.setdefault(path, f"no explain panel: {why}")

    @property
    def self_contained(self) -> bool:
        return len(self.thumbnails) <= SELF_CONTAINED_LIMIT

    def html(self, files_folder: str | None = None) -> str:
        """The page; ``files_folder``: the thumbnails are files ``<files_folder>/<n>.webp`` beside it, not inside."""
        thumb_index = {path: i for i, path in enumerate(self.thumbnails)}
        if files_folder is None:
            thumbs = [page.data_url(data) for data in self.thumbnails.values()]
        else:
            folder = urllib.parse.quote(files_folder)
            thumbs = [f"{folder}/{i}.webp" for i in range(len(self.thumbnails))]
        panel_index = {path: i for i, path in enumerate(self.panels)}
        index = {row["path"]: i for i, row in enumerate(self.scored)}
        columns = {"name": [], "score": [], "std": [], "lo": [], "hi": [], "w": [], "h": [], "thumb": [], "note": []}
        columns["panel"] = []
        display = {}
        for i, row in enumerate(self.scored):
            path = row["path"]
            name = encode_path(path)
            columns["name"].append(name)
            if printable(path) != name:
                display[i] = printable(path)
            for key, field in (("score", "score"), ("std", "score_std"), ("lo", "score_ci95_low")):
                columns[key].append(_number(row.get(field)))
            columns["hi"].append(_number(row.get("score_ci95_high")))
            columns["w"].append(row.get("width"))
            columns["h"].append(row.get("height"))
            columns["thumb"].append(thumb_index.get(path, -1))
            columns["note"].append(self.notes.get(path))
            columns["panel"].append(panel_index.get(path, -1))
        scale, svg = None, '<p class="muted">No picture was scored.</p>'
        if self.scored:
            scale, svg = page.histogram(columns["score"])
        data = {
            "rows": columns,
            "display": display,
            "thumbs": thumbs,
            "panels": [page.data_url(data) for data in self.panels.values()],
            "placeholder": page.PLACEHOLDER,
            "histogram": scale,
            "lowest": [index[p] for p in self.lowest],
            "highest": [index[p] for p in self.highest],
        }
        subtitle = f"{len(self.rows)} pictures"
        if self.sources:
            subtitle += " from " + ", ".join(printable(s) for s in self.sources)
        if self.duplicates:
            subtitle += f" ({self.duplicates} repeated rows: the last one kept)"
        subtitle += f" · made {self.made}"
        return page.page(
            title=self.title,
            subtitle=subtitle,
            counts=self.counts,
            settings=self.settings,
            histogram_svg=svg,
            failures=self.failures,
            missing_note=self._missing_note(),
            evaluation=page.evaluation_html(self.evaluation, self.scatter_png),
            data=data,
            files_folder=files_folder,
        )

    def _missing_note(self) -> str:
        unseen = sum(1 for row in self.scored if row["path"] not in self.thumbnails)
        if not unseen:
            return ""
        return (
            f'<p class="note" id="missing-note">{unseen} picture{"s" if unseen > 1 else ""} could not be shown '
            "(moved, deleted or unreadable since the run): a placeholder stands in, with the reason.</p>"
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the page to ``path`` (and, for a large run, its thumbnails to ``<stem>_files/`` beside it)."""
        path = Path(path)
        files_folder = None
        if not self.self_contained:
            folder = path.with_name(f"{path.stem}_files")
            folder.mkdir(exist_ok=True)
            for i, data in enumerate(self.thumbnails.values()):
                (folder / f"{i}.webp").write_bytes(data)
            files_folder = folder.name
        with atomic_write(path, "w") as file:  # a reader never sees half a page
            file.write(self.html(files_folder))
        return path

    def _repr_html_(self) -> str:
        """The page in a notebook cell: in an iframe of its own, so its script and styles touch nothing else."""
        return (
            f'<iframe srcdoc="{html.escape(self.html(), quote=True)}" style="width:100%;height:900px;border:0" '
            'sandbox="allow-scripts allow-downloads allow-modals"></iframe>'
        )


def _number(value):
    return value if isinstance(value, int | float) and not isinstance(value, bool) and value == value else None


def write_report(rows: list[dict], path: str | os.PathLike, **options) -> Path:
    """Write the report of ``rows`` to ``path``; ``options`` as for :class:`Report`. Returns the path."""
    return Report(rows, **options).save(path)
