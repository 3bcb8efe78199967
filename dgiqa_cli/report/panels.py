"""Explain panels (depth, attention, local quality) for the report's lowest and highest pictures.

Either made now with the model, through the same functions as ``dgiqa explain`` (:func:`from_model`), or taken
from the ``--heatmaps`` folder of an earlier ``dgiqa batch`` (:func:`from_heatmaps`), where each picture's panel
is ``<sub-folder>/<stem>_explain.png``, the sub-folders mirroring the pictures' own below their common parent.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from dgiqa_cli.report.thumbnails import encode_webp

PANEL_SUFFIX = "_explain.png"
PANEL_QUALITY = 85


def from_heatmaps(folder: str | os.PathLike, paths: list[str]) -> dict[str, bytes]:
    """The panels in ``folder`` of the pictures ``paths`` (those that have one), as WebP bytes.

    A panel is found by the picture's stem; where several pictures share a stem, by the longest run of
    folder names its panel's folder shares with the picture's.
    """
    by_stem: dict[str, list[Path]] = {}
    for panel in Path(folder).rglob(f"*{PANEL_SUFFIX}"):
        by_stem.setdefault(panel.name[: -len(PANEL_SUFFIX)], []).append(panel)
    found = {}
    for path in paths:
        candidates = by_stem.get(Path(path).stem)
        if not candidates:
            continue
        folders = Path(os.path.abspath(path)).parent.parts
        best = max(candidates, key=lambda panel: _shared_tail(panel.parent.relative_to(folder).parts, folders))
        try:
            with Image.open(best) as image:
                found[path] = encode_webp(image.convert("RGB"), PANEL_QUALITY)
        except OSError:
            continue  # a damaged panel: the picture is shown without one
    return found


def _shared_tail(panel_folders: tuple[str, ...], picture_folders: tuple[str, ...]) -> int:
    """How many trailing folder names the panel's (relative) folder shares with the picture's."""
    shared = 0
    for mine, theirs in zip(reversed(panel_folders), reversed(picture_folders), strict=False):
        if mine != theirs:
            break
        shared += 1
    return shared if shared == len(panel_folders) else -1


def from_model(
    scorer, paths: list[str], on_progress: Callable[[int, int], None] | None = None
) -> tuple[dict[str, bytes], dict[str, str]]:
    """Panels of ``paths`` made now with ``scorer`` (as ``dgiqa explain --heatmap`` draws them), as WebP bytes;
    and, for each picture that could not be explained, why."""
    from dgiqa_cli.explain.explanation import explain_image
    from dgiqa_cli.explain.panel import panel
    from dgiqa_cli.io.images import ImageError

    panels, failed = {}, {}
    for done, path in enumerate(paths, 1):
        try:
            drawn = panel(explain_image(scorer, path))
            panels[path] = encode_webp(drawn.convert("RGB"), PANEL_QUALITY)
        except (ImageError, ValueError) as exc:
            failed[path] = str(exc)
        if on_progress is not None:
            on_progress(done, len(paths))
    return panels, failed
