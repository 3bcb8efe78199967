"""``dgiqa batch``: score whole folders, resumable, rows written as images finish."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from dgiqa_cli.cli.common import QuietOpt, app, err, fail, out, progress_bar, render_table, run_outcome, setup_logging
from dgiqa_cli.cli.options import ScorerOptions, cli_option, with_options
from dgiqa_cli.cli.running import check_outputs, check_resumable, open_writers, print_summary, save_report, score_paths
from dgiqa_cli.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from dgiqa_cli.io.names import printable


@dataclasses.dataclass(frozen=True)
class Sources:
    """Where the pictures come from besides the arguments, and which of them count."""

    from_list: str | None = cli_option(
        Annotated[
            str | None, typer.Option("--from-list", help="Also score the paths in this file, one a line ('-': stdin).")
        ]
    )
    recursive: bool = cli_option(
        Annotated[bool, typer.Option("--recursive/--no-recursive", help="Walk sub-folders.")], True
    )
    glob: str | None = cli_option(
        Annotated[str | None, typer.Option(help="Only files matching this pattern, e.g. '*.jpg' or 'raw/*/*.png'.")]
    )
    image_column: str | None = cli_option(
        Annotated[
            str | None,
            typer.Option(help="Parquet inputs: the column of encoded image bytes. Default: image, jpg, png, ..."),
        ]
    )
    key_column: str | None = cli_option(
        Annotated[
            str | None,
            typer.Option(
                help="Parquet inputs: the column naming each row (FILE/KEY). Default: key, __key__, path, ..."
            ),
        ]
    )

    def as_kwargs(self) -> dict:
        """:func:`dgiqa_cli.io.sources.collect_units`' keyword arguments."""
        return {
            "recursive": self.recursive,
            "pattern": self.glob,
            "from_list": self.from_list,
            "image_column": self.image_column,
            "key_column": self.key_column,
        }


@dataclasses.dataclass(frozen=True)
class Outputs:
    """Where the rows go as images finish, and what becomes of rows already there."""

    csv_path: Path | None = cli_option(
        Annotated[Path | None, typer.Option("--csv", help="Write rows to this CSV as images finish ('-': stdout).")]
    )
    jsonl_path: Path | None = cli_option(
        Annotated[
            Path | None,
            typer.Option("--jsonl", help="Write rows to this JSON Lines file as images finish ('-': stdout)."),
        ]
    )
    parquet_path: Path | None = cli_option(
        Annotated[
            Path | None,
            typer.Option(
                "--parquet",
                help="Write rows (the CSV's columns) to this Parquet file, put in place when the run ends; with "
                "--ray a folder, one file per shard / Parquet file / 1000 loose files.",
            ),
        ]
    )
    csv_safe: bool = cli_option(
        Annotated[
            bool,
            typer.Option(
                "--csv-safe",
                help="Prefix text cells that a spreadsheet would run as a formula (=, +, -, @) with a quote (').",
            ),
        ],
        False,
    )
    resume: bool = cli_option(
        Annotated[
            bool, typer.Option(help="Keep the rows already in --csv/--jsonl and score only the images they lack.")
        ],
        False,
    )
    overwrite: bool = cli_option(Annotated[bool, typer.Option(help="Replace existing --csv/--jsonl files.")], False)


@dataclasses.dataclass(frozen=True)
class RayOptions:
    """``--ray``: where and how wide the run spreads over a Ray cluster."""

    use_ray: bool = cli_option(
        Annotated[
            bool,
            typer.Option(
                "--ray",
                help="Score on a Ray cluster through ray.data (pip install 'dgiqa\\[ray]'): rows go to --parquet "
                "FOLDER. The cluster: --ray-address, else $RAY_ADDRESS, else a local one started for the run.",
            ),
        ],
        False,
    )
    ray_address: str | None = cli_option(
        Annotated[
            str | None,
            typer.Option(
                help="With --ray: the cluster to join (auto, HOST:PORT, ray://HOST:PORT).", show_default=False
            ),
        ]
    )
    concurrency: int = cli_option(
        Annotated[int, typer.Option(min=1, help="With --ray: scoring actors (each loads the models once).")], 1
    )
    num_gpus_per_worker: float | None = cli_option(
        Annotated[
            float | None,
            typer.Option(
                min=0,
                help="With --ray: GPUs per actor (0.5: two actors share one). Default: 1 if the cluster has GPUs, "
                "else 0.",
                show_default=False,
            ),
        ]
    )
    num_cpus_per_worker: float = cli_option(
        Annotated[float, typer.Option(min=0.1, help="With --ray: CPUs per actor (its torch threads).")], 1.0
    )


@app.command()
@with_options()
def batch(
    folders: Annotated[
        list[str] | None,
        typer.Argument(
            help="Folders (walked recursively), image files, WebDataset shards (.tar), Parquet files of image "
            "bytes (.parquet), or any of these as a URL (s3://, gs://, https://, ...: what fsspec's installed "
            "backends read; a URL with * is expanded).",
            show_default=False,
        ),
    ] = None,
    *,
    sources: Sources,
    outputs: Outputs,
    ray: RayOptions,
    summary: Annotated[bool, typer.Option(help="Print the score distribution and the lowest-scoring files.")] = False,
    lowest: Annotated[int, typer.Option(min=1, help="How many lowest-scoring files --summary lists.")] = 10,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Threads that decode and prepare images ahead of the device (0: none, one image at a time). "
            "Default: the CPU count (at most 16) with a GPU, 1 on CPU.",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="Images per device batch (DGIQA sees this x --crops crops). Default: 32 GPU, 1 CPU."),
    ] = None,
    compile_models: Annotated[
        bool, typer.Option("--compile", help="torch.compile the networks: slow start, faster long runs.")
    ] = False,
    heatmaps: Annotated[
        Path | None,
        typer.Option(help="Write an explain panel (depth, attention, local quality) per image into this folder."),
    ] = None,
    heatmaps_worst: Annotated[
        int | None, typer.Option(min=1, help="With --heatmaps: panels only for the N lowest-scoring images.")
    ] = None,
    report_path: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Also write an HTML report of the rows here (see dgiqa report), at the end or on Ctrl-C; with "
            "--heatmaps, its panels are shown.",
        ),
    ] = None,
    options: ScorerOptions,
    quiet: QuietOpt = False,
) -> None:
    """Score whole folders fast: parallel decoding, batched GPU work, rows written as they finish.

    Interrupt it at any time; run it again with --resume and every image ends up
    with exactly one row. Without --csv/--jsonl a table is printed at the end.

    [dim]Examples:[/]

      dgiqa batch ./photos --csv scores.csv --summary

      find . -name '*.jpg' | dgiqa batch --from-list - --jsonl out.jsonl

      dgiqa batch shards/*.tar images.parquet --parquet scores.parquet

      dgiqa batch 's3://bucket/shards/*.tar' --ray --ray-address auto --concurrency 8 --parquet scores/

    A shard's images are named SHARD/MEMBER (shards/000001.tar/sample7.jpg), a Parquet row FILE/KEY;
    --resume matches rows on these names.
    """
    from dgiqa_cli.io.rows import lock_outputs, row_of
    from dgiqa_cli.io.sources import collect_units, is_url, iter_items, total_items

    setup_logging(quiet)
    folders = folders or []
    if not folders and sources.from_list is None:
        raise fail("give folders or files to score, or --from-list FILE", EXIT_USAGE)
    missing = [printable(f) for f in folders if not is_url(f) and not Path(f.removeprefix("file://")).exists()]
    if missing:
        raise fail(f"no such file or folder: {', '.join(missing)}", EXIT_USAGE)
    if sources.from_list not in (None, "-") and not Path(sources.from_list).is_file():
        raise fail(f"--from-list {sources.from_list}: no such file", EXIT_USAGE)
    if heatmaps_worst is not None and heatmaps is None:
        raise fail("--heatmaps-worst needs --heatmaps DIR", EXIT_USAGE)
    if heatmaps is not None and heatmaps.exists() and not heatmaps.is_dir():
        raise fail(f"--heatmaps {heatmaps}: exists and is not a folder", EXIT_USAGE)
    if ray.use_ray:
        forbidden = {"--csv": outputs.csv_path, "--jsonl": outputs.jsonl_path, "--heatmaps": heatmaps}
        forbidden.update({"--compile": compile_models, "--report (run dgiqa report FOLDER after it)": report_path})
        run_on_ray(folders, sources, outputs, forbidden, options, ray, batch_size, quiet)
    resume, csv_safe = outputs.resume, outputs.csv_safe
    opened = check_outputs(outputs.csv_path, outputs.jsonl_path, resume, outputs.overwrite, outputs.parquet_path)
    report_rows = check_report(report_path, opened)

    def report_so_far() -> None:
        if report_path is not None and report_rows is not None:
            save_report(report_path, read_report_rows(report_rows, csv_safe), quiet, heatmaps=heatmaps_folder(heatmaps))

    finished = "every finished image has its row; run again with --resume to finish"
    with run_outcome(finished, on_interrupt=report_so_far), lock_outputs([path for path, _ in opened]):
        if resume:  # what the options alone say, before any model is loaded
            settings = {"crops": options.crops, "crop_mode": options.crop_mode, "seed": options.seed}
            check_resumable(opened, settings, csv_safe)
        units = collect_units(folders, **sources.as_kwargs())
        total = total_items(units)
        if total == 0:
            err.print("no images found", highlight=False)
            raise typer.Exit(EXIT_OK)
        scorer = options.build()
        if compile_models:
            scorer.compile()
        if resume:
            check_resumable(opened, scorer.settings, csv_safe)
        writers = open_writers(opened, resume, scorer.settings, csv_safe)
        skipped = []

        def already_done(name: str) -> bool:
            if writers and all(name in done for _, done in writers):
                skipped.append(name)
                return True
            return False

        if writers and total is not None:  # the progress bar counts only what is left
            total -= count_done(units, set.intersection(*(done for _, done in writers)))
        try:
            todo = iter_items(units, already_done)
            stats, table_rows, scores_seen = score_paths(scorer, todo, writers, batch_size, workers, quiet, total)
        finally:
            for writer, _ in writers:
                writer.close()
        stats.skipped = len(skipped)
    if table_rows:
        out.print(render_table(table_rows, scorer))
    if not quiet:
        print_summary(stats, scores_seen, lowest, summary)
    if heatmaps is not None:
        chosen = sorted(scores_seen)[:heatmaps_worst] if heatmaps_worst else scores_seen
        write_heatmaps(scorer, [path for _, path in chosen], heatmaps, outputs.overwrite, quiet)
    if report_path is not None:
        rows = (
            read_report_rows(report_rows, csv_safe) if report_rows else [row_of(r, scorer.settings) for r in table_rows]
        )
        save_report(report_path, rows, quiet, heatmaps=heatmaps_folder(heatmaps), skipped=stats.skipped)
    raise typer.Exit(EXIT_FAILED if stats.failed else EXIT_OK)


def check_report(path: Path | None, outputs: list) -> Path | None:
    """With --report: check it can be written, and name the output its rows are read back from (None: the table's
    rows, kept in memory). Rows sent only to stdout are not kept, so they cannot be reported (exit 2)."""
    from dgiqa_cli.io.rows import STDOUT, check_writable

    if path is None:
        return None
    try:
        check_writable(path)
    except OSError as exc:
        raise fail(f"--report: {exc}", EXIT_USAGE) from None
    files = [file for file, _ in outputs if str(file) != STDOUT]
    if outputs and not files:
        raise fail("--report reads the rows back from a file: give --csv, --jsonl or --parquet a file", EXIT_USAGE)
    return files[0] if files else None


def read_report_rows(path: Path, csv_safe: bool) -> list[dict]:
    """The rows of the run's output for its report (the file's earlier rows too, after --resume)."""
    from dgiqa_cli.report import RowsError, read_rows

    try:
        return read_rows([path], csv_safe) if path.exists() else []
    except RowsError as exc:
        err.print(f"[bold red]error:[/] no report: {escape(str(exc))}", highlight=False)
        return []


def heatmaps_folder(heatmaps: Path | None) -> Path | None:
    return heatmaps if heatmaps is not None and heatmaps.is_dir() else None


def write_heatmaps(scorer, paths: list[str], folder: Path, overwrite: bool, quiet: bool) -> None:
    """Explain panels for ``paths``, in sub-folders mirroring theirs (below their common parent).

    Panels that already exist are kept (a resumed run does not redo them) unless --overwrite.
    """
    from dgiqa_cli.explain.outputs import write_explanation
    from dgiqa_cli.io.images import ImageError

    if not paths:
        return
    common = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    with progress_bar(quiet) as progress:
        task = progress.add_task("Heatmaps", total=len(paths), current="")
        for path in paths:
            progress.update(task, current=printable(Path(path).name))
            target = folder / os.path.relpath(os.path.dirname(os.path.abspath(path)), common)
            try:
                write_explanation(scorer, path, target, heatmap=True, force=overwrite)
            except FileExistsError:
                pass  # made by an earlier run
            except (ImageError, ValueError) as exc:
                err.print(f"[red]no heatmap:[/] {escape(printable(path))}: {escape(str(exc))}", highlight=False)
            progress.advance(task)
    if not quiet:
        err.print(f"heatmaps for {len(paths)} images in {folder}", highlight=False)


def count_done(units, done: set[str]) -> int:
    """How many of ``done`` (names with a row) belong to ``units``, without reading a shard."""
    files = {f for unit in units if unit.kind == "files" for f in unit.files}
    prefixes = tuple(f"{unit.location}/" for unit in units if unit.kind != "files")
    return sum(1 for name in done if name in files or (prefixes and name.startswith(prefixes)))


def run_on_ray(specs, sources: Sources, outputs: Outputs, forbidden, options: ScorerOptions, ray: RayOptions,
               batch_size, quiet) -> None:  # fmt: skip
    """``dgiqa batch --ray``: units read and scored on a Ray cluster, one Parquet file per unit in ``--parquet``."""
    from dgiqa_cli.io.rows import lock_outputs
    from dgiqa_cli.io.sources import collect_units, total_items

    folder, resume, overwrite = outputs.parquet_path, outputs.resume, outputs.overwrite
    given = [name for name, value in forbidden.items() if value]
    if given:
        raise fail(f"--ray writes --parquet FOLDER only; drop {', '.join(given)}", EXIT_USAGE)
    if folder is None:
        raise fail("--ray needs --parquet FOLDER (one Parquet file per shard, Parquet file or 1000 files)", EXIT_USAGE)
    if folder.exists() and not folder.is_dir():
        raise fail(f"--parquet {printable(str(folder))}: with --ray this is a folder, and a file is there", EXIT_USAGE)
    if folder.is_dir() and any(folder.glob("*.parquet")) and not (resume or overwrite):
        raise fail(
            f"{printable(str(folder))} holds rows; add --resume to score only what it lacks, or --overwrite", EXIT_USAGE
        )
    try:
        import ray as _ray  # noqa: F401
    except ImportError:
        raise fail("--ray needs Ray: pip install 'dgiqa[ray]'", EXIT_USAGE) from None
    units = collect_units(specs, **sources.as_kwargs())
    total = total_items(units)
    from dgiqa_cli.inference import distributed

    folder.mkdir(parents=True, exist_ok=True)
    gpus = ray.num_gpus_per_worker
    if gpus is None:
        gpus = 1 if distributed.cluster_gpus(ray.ray_address) else 0
    if not gpus and options.device == "auto":
        options = dataclasses.replace(options, device="cpu")
    finished = "every finished unit has its file; run again with --resume to finish"
    with run_outcome(finished), lock_outputs([folder / ".dgiqa-run"]), progress_bar(quiet) as progress:
        if overwrite:
            for old in folder.glob("*.parquet"):
                old.unlink()
        task = progress.add_task("Scoring (Ray)", total=total, current="")

        def on_rows(rows) -> None:
            for row in rows:
                if row["error"] is not None:
                    err.print(f"[red]failed:[/] {escape(printable(row['path']))}: {escape(row['error'])}")
            progress.update(task, advance=len(rows), current=printable(os.path.basename(rows[-1]["path"])))

        stats = distributed.run(
            units,
            folder,
            options.as_kwargs(),
            address=ray.ray_address,
            resume=resume,
            batch_size=batch_size,
            concurrency=ray.concurrency,
            num_gpus=gpus,
            num_cpus=ray.num_cpus_per_worker,
            on_rows=on_rows,
        )
    if not quiet:
        err.print(
            f"{stats.scored} scored, {stats.failed} failed, {stats.skipped} skipped (already done); "
            f"{printable(str(folder))}: one Parquet file per unit",
            highlight=False,
        )
    if stats.incomplete:
        err.print(f"[red]{len(stats.incomplete)} units incomplete[/]: run again with --resume", highlight=False)
        raise typer.Exit(EXIT_FAILED)
    raise typer.Exit(EXIT_FAILED if stats.failed else EXIT_OK)
