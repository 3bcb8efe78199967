"""``dgiqa explain``: why an image scored as it did.

Data (the report, or JSON with ``--json``) goes to stdout; progress, warnings
and errors to stderr. Exit codes: 0 every image explained, 1 some failed,
2 usage error (including files that would be overwritten without ``--force``).
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from dgiqa_cli.cli.common import QuietOpt, app, err, fail, out, progress_bar, setup_logging
from dgiqa_cli.cli.options import ScorerOptions, with_options
from dgiqa_cli.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from dgiqa_cli.io.names import encode_path, printable


class QualityScale(str, Enum):
    auto = "auto"
    model = "model"
    picture = "picture"


class AttentionChoice(str, Enum):
    cross = "cross"
    refine = "refine"
    both = "both"


ATTENTION_KINDS = {"cross": ("cross",), "refine": ("refine",), "both": ("cross", "refine")}


def check_outputs(
    images: list[Path],
    out_dir: Path | None,
    family,
    kinds: tuple[str, ...],
    *,
    quality: bool,
    heatmap: bool,
    save_arrays: bool,
    force: bool,
) -> None:
    """Usage error (exit 2) if two images would write the same file, or, without ``force``, a file is in the way.

    ``family``: the model's :class:`~dgiqa_cli.explain.families.Family`, or None while it
    is not known yet (then only the files every family writes are checked).
    """
    from dgiqa_cli.explain.outputs import existing_outputs, output_paths

    if not (heatmap or save_arrays):
        return
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise fail(f"{out_dir}: is not a folder", EXIT_USAGE)
    depth = family is not None and family.has_depth
    planned = {
        path: output_paths(
            path, out_dir, attention=kinds, quality=quality, heatmap=heatmap, save_arrays=save_arrays, depth=depth
        )
        for path in images
    }
    seen: dict[Path, Path] = {}
    for path, paths in planned.items():
        for target in paths.values():
            if target in seen and seen[target] != path:
                raise fail(
                    f"{seen[target]} and {path} would both write {target}; use separate --out folders", EXIT_USAGE
                )
            seen[target] = path
    if not force:
        taken = [p for paths in planned.values() for p in existing_outputs(paths)]
        if taken:
            more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
            raise fail(f"{taken[0]} exists{more}; use --force to overwrite, or --out another folder", EXIT_USAGE)


@with_options()
def explain(
    images: Annotated[list[Path], typer.Argument(help="Image files to explain.", show_default=False)],
    *,
    heatmap: Annotated[
        bool,
        typer.Option(
            "--heatmap",
            help="Write the pictures: a panel (input, depth for DGIQA, attention, local quality) and one PNG "
            "per map, each the input's size.",
        ),
    ] = False,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for the files (created if missing). Default: next to each image."),
    ] = None,
    attention: Annotated[
        AttentionChoice,
        typer.Option(
            help="Which attention to map: cross (DGIQA: Depth-CAR, depth -> RGB; Life-IQA: its decoder's "
            "queries -> stage-3 grid), refine (DGIQA's self-attention) or both (DGIQA)."
        ),
    ] = AttentionChoice.cross,
    stride: Annotated[
        int,
        typer.Option(
            min=1,
            max=224,
            help="Step between the 224x224 windows of the local-quality map, in pixels of the model's frame "
            "(DGIQA: short side 384; Life-IQA: 512 high, 384 wide).",
        ),
    ] = 32,
    smooth: Annotated[
        float, typer.Option(min=0.0, help="Gaussian smoothing of the quality map (sigma, pixels of the model's frame).")
    ] = 16.0,
    quality: Annotated[
        bool, typer.Option("--quality/--no-quality", help="Compute the local-quality map and the worst region.")
    ] = True,
    quality_scale: Annotated[
        QualityScale,
        typer.Option(
            help="Colours of the quality map: model (the model's score range, e.g. DGIQA's 0-1: panels compare), "
            "picture (this picture's own range: small differences show) or auto (model where the range is "
            "bounded, picture for Life-IQA). The panel says which."
        ),
    ] = QualityScale.auto,
    overlay: Annotated[bool, typer.Option("--overlay", help="Blend the maps over the picture.")] = False,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Opacity of the maps with --overlay.")] = 0.5,
    save_arrays: Annotated[
        bool, typer.Option("--save-arrays", help="Also write the raw arrays to {stem}_explain.npz.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite files that exist.")] = False,
    note: Annotated[
        str | None, typer.Option(help="Text added to the panel's title (e.g. which weights).", show_default=False)
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list of reports, and nothing else, on stdout.")
    ] = False,
    options: ScorerOptions,
    quiet: QuietOpt = False,
) -> None:
    """Explain scores: attention and local-quality maps (and DGIQA's depth), and the worst region.

    The score is the one `dgiqa score` gives with the same options; the attention
    comes from the very pass that produced it. Examples:

      dgiqa explain photo.jpg

      dgiqa explain photo.jpg --heatmap --out explained/ --attention both

      dgiqa explain photo.jpg --heatmap --model life-iqa

      dgiqa explain photo.jpg --heatmap --overlay --alpha 0.6 --save-arrays --json
    """
    from dgiqa_cli.explain.families import FAMILIES, check_attention_kinds, family_of
    from dgiqa_cli.explain.outputs import write_explanation
    from dgiqa_cli.io.images import ImageError

    setup_logging(quiet)
    kinds = ATTENTION_KINDS[attention.value]
    outputs = {"quality": quality, "heatmap": heatmap, "save_arrays": save_arrays, "force": force}
    # The family is known before loading when --model says it (or no weights: the DGIQA default);
    # otherwise the weights tell, once loaded, and what depends on it is checked then.
    family = FAMILIES[options.model] if options.model else (FAMILIES["dgiqa"] if options.weights is None else None)
    if family is not None:
        try:
            check_attention_kinds(kinds, family)
        except ValueError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
    check_outputs(images, out_dir, family, kinds, **outputs)

    scorer = options.build()
    try:
        loaded = family_of(scorer)
        check_attention_kinds(kinds, loaded)
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    if loaded is not family:
        check_outputs(images, out_dir, loaded, kinds, **outputs)
    reports = []
    with progress_bar(quiet) as progress:
        task = progress.add_task("Explaining", total=None, current="")
        for path in images:
            progress.update(task, description=f"Explaining {path.name}", completed=0, total=None, current="")

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total, current="quality windows")

            try:
                report = write_explanation(
                    scorer,
                    path,
                    out_dir,
                    attention=kinds,
                    quality=quality,
                    stride=stride,
                    smooth=smooth,
                    quality_scale=quality_scale.value,
                    overlay=overlay,
                    alpha=alpha,
                    heatmap=heatmap,
                    save_arrays=save_arrays,
                    force=force,
                    title=note,
                    on_progress=advance,
                )
            except ImageError as exc:
                report = {"path": exc.path, "score": None, "error": exc.reason, "files": {}}
            except OSError as exc:  # the folder or a file could not be written
                report = {"path": str(path), "score": None, "error": str(exc), "files": {}}
            reports.append(report)
            if not as_json:
                print_report(report)

    if as_json:
        rows = [
            dict(r, path=encode_path(r["path"]), files={k: encode_path(v) for k, v in r["files"].items()})
            for r in reports
        ]
        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")  # valid UTF-8 whatever the names
    failed = [r for r in reports if r["error"] is not None]
    for r in failed:
        err.print(f"[red]failed:[/] {escape(printable(r['path']))}: {escape(r['error'])}", highlight=False)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def print_report(report: dict) -> None:
    """The human-readable report of one image, on stdout."""
    if report["error"] is not None:
        return
    crops = report["crops"]
    out.print(
        f"[bold]{escape(printable(report['path']))}[/]: score {report['score']:.4f} "
        f"({len(crops)} crops, {min(c['score'] for c in crops):.4f}..{max(c['score'] for c in crops):.4f})",
        highlight=False,
    )
    if report.get("scale"):
        out.print(f"  model: {escape(report['model'])} ({report['arch']}; {report['scale']})", highlight=False)
    worst = report.get("worst_region")
    if worst:
        x0, y0, x1, y1 = worst["box"]
        stats = report["quality_map"]
        out.print(
            f"  worst region: x {x0}..{x1}, y {y0}..{y1} (score {worst['score']:.4f}; "
            f"{stats['windows']} windows, mean {stats['mean']:.4f})",
            highlight=False,
        )
    for role, path in report["files"].items():
        out.print(f"  {role}: {escape(printable(path))}", highlight=False)


app.command()(explain)
