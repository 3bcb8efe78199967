"""An explanation's files: where they go, which exist already, and :func:`write_explanation` that does it all."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dgiqa_cli.errors import UsageError
from dgiqa_cli.explain import render
from dgiqa_cli.explain.explanation import DEFAULT_BATCH, DEFAULT_SMOOTH, DEFAULT_STRIDE, explain_prepared
from dgiqa_cli.explain.families import check_attention_kinds, family_of
from dgiqa_cli.explain.panel import map_views, panel


def output_paths(
    image_path: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    attention: Sequence[str] = ("cross",),
    quality: bool = True,
    heatmap: bool = True,
    save_arrays: bool = False,
    depth: bool = True,
) -> dict[str, Path]:
    """The files an explanation of ``image_path`` writes, by role: ``{stem}_explain.png``, ``{stem}_depth.png``...

    ``out_dir`` defaults to the image's own folder; ``depth``: whether the
    model has a depth map to write (``Family.has_depth``).
    """
    image_path = Path(image_path)
    folder = Path(out_dir) if out_dir is not None else image_path.parent
    stem = image_path.stem
    paths: dict[str, Path] = {}
    if heatmap:
        paths["panel"] = folder / f"{stem}_explain.png"
        if depth:
            paths["depth"] = folder / f"{stem}_depth.png"
        for kind in attention:
            paths[f"attention_{kind}"] = folder / f"{stem}_attention_{kind}.png"
        if quality:
            paths["quality"] = folder / f"{stem}_quality.png"
    if save_arrays:
        paths["arrays"] = folder / f"{stem}_explain.npz"
    return paths


def existing_outputs(paths: dict[str, Path]) -> list[Path]:
    return [p for p in paths.values() if p.exists()]


def write_explanation(
    scorer,
    path: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    attention: Sequence[str] = ("cross",),
    quality: bool = True,
    stride: int = DEFAULT_STRIDE,
    smooth: float = DEFAULT_SMOOTH,
    quality_scale: str = "auto",
    overlay: bool = False,
    alpha: float = 0.5,
    heatmap: bool = True,
    save_arrays: bool = False,
    force: bool = False,
    title: str | None = None,
    prepared=None,
    depth=None,
    batch_size: int = DEFAULT_BATCH,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Explain one picture and write its files; returns the JSON report (with ``files``: role -> path).

    The reusable entry point (``dgiqa explain --heatmap``, ``dgiqa batch
    --heatmaps DIR``). ``path``: the image file (its stem names the outputs).
    ``out_dir``: where to write (created if missing; default: next to the
    image). Writes, with ``heatmap``: ``{stem}_explain.png`` (the panel),
    ``{stem}_depth.png`` (DGIQA), ``{stem}_attention_{cross,refine}.png``,
    ``{stem}_quality.png`` (each the input's size, pixel-aligned with it); with
    ``save_arrays``: ``{stem}_explain.npz`` (see :meth:`Explanation.arrays`).
    ``prepared`` / ``depth``: reuse a ``PreparedImage`` and its depth map (DGIQA)
    when the caller already has them (the batch engine); the scoring then matches
    ``Scorer.score`` for the same picture and settings. ``title``: text added
    to the panel's heading. ``on_progress(done, total)``: called as the
    quality windows are scored.

    Raises ``FileExistsError`` (before any model work) when a file would be
    overwritten and not ``force``, ``ImageError`` for an input that cannot be
    scored, ``ValueError`` for bad options.
    """
    family = family_of(scorer)
    kinds = check_attention_kinds(attention, family)
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"alpha must be between 0 and 1 (got {alpha})")
    paths = output_paths(
        path,
        out_dir,
        attention=kinds,
        quality=quality,
        heatmap=heatmap,
        save_arrays=save_arrays,
        depth=family.has_depth,
    )
    if not force and (taken := existing_outputs(paths)):
        raise FileExistsError(f"{taken[0]} exists (force=True replaces it)")

    if prepared is None:
        prepared = scorer.prepare(scorer.load(path))
    explanation = explain_prepared(
        scorer,
        prepared,
        depth,
        attention=kinds,
        quality=quality,
        stride=stride,
        smooth=smooth,
        quality_scale=quality_scale,
        batch_size=batch_size,
        on_progress=on_progress,
    )
    report = explanation.report()
    if paths:
        next(iter(paths.values())).parent.mkdir(parents=True, exist_ok=True)
    if heatmap:
        views = map_views(explanation)
        picture = explanation.rgb if overlay else None
        for view in views:  # each the input's size, pixel-aligned, with a small legend in a corner
            render.save_png(render.with_legend(view.colour(picture, alpha), view), paths[view.role])
        drawn = panel(explanation, overlay=overlay, alpha=alpha, title=title, views=views)
        render.save_png(drawn, paths["panel"], optimize=True)
    if save_arrays:
        with open(paths["arrays"], "wb") as f:
            np.savez_compressed(f, **explanation.arrays())
    report["files"] = {role: str(p) for role, p in paths.items()}
    return report
