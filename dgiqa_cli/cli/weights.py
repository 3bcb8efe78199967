"""``dgiqa weights``: list, download, import, inspect and publish checkpoints.

Same conventions as :mod:`dgiqa_cli.cli.common`: data (tables, JSON) on stdout;
progress, notes and errors on stderr; exit 0 on success, 1 when weights
cannot be had or fail their checks, 2 on usage errors.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from dgiqa_cli.cli import common as _cli  # err/out consoles, fail(), exit codes
from dgiqa_cli.cli.options import DepthModel
from dgiqa_cli.errors import EXIT_OK, EXIT_WEIGHTS
from dgiqa_cli.models import ARCHITECTURES

weights_app = typer.Typer(
    cls=_cli.DGIQAGroup,  # library errors -> exit codes, also when the group is run on its own
    name="weights",
    help=(
        "Named weights: list them, download them to the Hugging Face cache, import the authors' .pth files, "
        "inspect and publish them.\n\n"
        "  dgiqa weights list\n\n"
        "  dgiqa weights import DGIQA_Koniq10k.pth --name koniq --trained-on KonIQ-10k\n\n"
        "  dgiqa score photo.jpg --weights koniq\n\n"
        "  dgiqa weights push koniq --repo me/dgiqa-koniq --dry-run"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


# Every architecture a weights file can hold, as Typer choices (the models package imports torch lazily).
Architecture = Enum("Architecture", {arch.replace("-", "_"): arch for arch in ARCHITECTURES}, type=str)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON, and nothing else, on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or notes on stderr.")]


def _fail(message: str, code: int) -> typer.Exit:
    return _cli.fail(message, code)


def _print_json(payload) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def _note(message: str, quiet: bool = False) -> None:
    if not quiet:
        _cli.err.print(message, highlight=False)


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def _range_text(score_range, kind: str) -> str:
    if kind == "depth" or score_range is None:
        return "-"
    low, high = score_range
    if low is None and high is None:
        return "unbounded"
    return f"[{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"


# -- list -----------------------------------------------------------------------------------------


def _list_rows() -> list[dict]:
    from dgiqa_cli.weights.download import cached_file
    from dgiqa_cli.weights.registry import RegistryError, local_entries, packaged_entries

    rows = []
    for kind in ("model", "depth"):
        entries = dict(packaged_entries(kind))
        try:
            for name, entry in local_entries(kind).items():
                entries.setdefault(name, entry)
        except RegistryError as exc:
            _cli.err.print(f"[yellow]warning:[/] {escape(str(exc))}", highlight=False)
        for entry in entries.values():
            path = cached_file(entry)
            size = path.stat().st_size if path is not None else entry.size
            rows.append(
                {
                    "name": entry.name,
                    "kind": kind,
                    "origin": entry.origin,
                    "architecture": entry.arch,
                    "trained_on": entry.trained_on,
                    "score_range": list(entry.score_range) if kind == "model" else None,
                    "depth_model": entry.depth_model,
                    "repo": entry.repo or None,
                    "revision": entry.revision,
                    "filename": entry.filename,
                    "published": entry.published,
                    "size": size,
                    "sha256": entry.sha256,
                    "cached": path is not None,
                    "path": str(path) if path is not None else None,
                }
            )
    return rows


@weights_app.command("list")
def list_weights(as_json: JsonOpt = False) -> None:
    """Every named model and depth model (packaged and imported), and whether it is on this machine."""
    rows = _list_rows()
    if as_json:
        _print_json(rows)
        return
    table = Table(header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for column, options in (
        ("name", {"no_wrap": True}),
        ("architecture", {"no_wrap": True}),
        ("trained on", {"overflow": "fold", "min_width": 9}),
        ("range", {"no_wrap": True}),
        ("Hub repo", {"overflow": "fold", "min_width": 16}),
        ("size", {"no_wrap": True, "justify": "right"}),
        ("cached", {"no_wrap": True}),
    ):
        table.add_column(column, **options)
    unpublished = False
    for row in rows:
        if row["origin"] == "local":
            cached = "[green]imported[/]" if row["cached"] else "[red]missing[/]"
        else:
            cached = "[green]yes[/]" if row["cached"] else "no"
        repo = escape(row["repo"] or "-")
        if row["repo"] and not row["published"]:
            repo += " *"
            unpublished = True
        table.add_row(
            escape(row["name"]),
            row["architecture"],
            escape(row["trained_on"].split(" (")[0] or "-"),  # the table gets the short form; --json all of it
            _range_text(row["score_range"], row["kind"]),
            repo,
            human_size(row["size"]),
            cached,
        )
    if unpublished:
        table.caption = "* not on the Hub yet: import the authors' file (`dgiqa weights import FILE --name NAME`)"
    _cli.out.print(table)


def checksum_text(report: dict) -> str:
    """The checksum line of ``weights info``: ok / MISMATCH, and where the expected sha256 comes from."""
    if not report["checksum"]:
        return "no expected sha256"
    release = report.get("release")
    if release and release["verified"] == "recorded":
        return f"{report['checksum']} (sha256 recorded at its {release['recorded']}; no release hash is published)"
    return report["checksum"]


def _print_fields(rows) -> None:
    """``key  value`` lines: one per field, never wrapped (hashes and paths stay whole for copy and grep)."""
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        _cli.out.print(f"[bold]{key.ljust(width)}[/]  {escape(str(value))}", highlight=False)


# -- download -------------------------------------------------------------------------------------


class _Transfers:
    """Progress bars for huggingface_hub downloads (its ``tqdm_class`` hook), drawn by rich on stderr."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.bytes = 0
        transfers = self

        class Bar:
            def __init__(self, *args, total=None, initial=0, desc="", **kwargs):
                self.task = progress.add_task(str(desc or "download"), total=total, completed=initial)

            def update(self, n=1):
                transfers.bytes += n or 0
                progress.advance(self.task, n or 0)

            def close(self):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        self.bar_class = Bar


def _download_targets(names: list[str]):
    """Each name -> (label, entry or None, hf uri or None); unknown names are usage errors."""
    from dgiqa_cli.weights import UnknownWeightsError, WeightsError
    from dgiqa_cli.weights.download import parse_hf_uri
    from dgiqa_cli.weights.registry import RegistryError, find_entry, packaged_entries

    targets = []
    for name in names:
        if name.startswith("hf://"):
            parse_hf_uri(name)  # a malformed address is a usage error
            targets.append((name, None, name))
            continue
        try:
            entry = find_entry(name, "model") or find_entry(name, "depth")
        except RegistryError as exc:
            raise WeightsError(str(exc)) from None
        if entry is None:
            known = ", ".join([*packaged_entries("model"), *packaged_entries("depth")])
            raise UnknownWeightsError(f"{name!r} is not a registry name ({known}) or hf://OWNER/REPO[/FILE]")
        targets.append((name, entry, None))
    return targets


def _fetch(label, entry, uri, revision, force, transfers) -> dict:
    """Download one target; return its row (status 'downloaded', 'cached' or 'local')."""
    from dgiqa_cli.weights import MissingHubFileError
    from dgiqa_cli.weights.download import HubLocation, download, fetch_entry, how_to_get, parse_hf_uri
    from dgiqa_cli.weights.files import verify_sha256
    from dgiqa_cli.weights.hubformat import CONFIG_FILE, DEFAULT_HUB_FILE, read_config
    from dgiqa_cli.weights.resolve import hf_uri_names_file

    before = transfers.bytes
    expected = None
    if entry is not None and entry.origin == "local":
        path = entry.local_file
        if path is None or not path.is_file():
            from dgiqa_cli.weights.resolve import resolve_local_entry

            resolve_local_entry(entry)  # raises with what to do
        expected = entry.sha256
        status = "local"
    elif entry is not None and revision is not None and revision != entry.revision:
        location = HubLocation(entry.repo, entry.filename, revision)  # another revision: the Hub's, unchecked
        path = download(location, how_to_get(entry), tqdm_class=transfers.bar_class, force=force)
        status = None
    elif entry is not None:
        # Its sources in the registry's order (the Hub when published, then the authors' release link);
        # the file is checked against the registry's sha256, or the one recorded at its first download.
        fetched = fetch_entry(entry, force=force, tqdm_class=transfers.bar_class)
        path, expected, status = fetched.path, fetched.sha256, fetched.status
    else:
        location = parse_hf_uri(uri)
        if revision is not None:
            location = HubLocation(location.repo, location.filename, revision)
        path = None
        if not hf_uri_names_file(uri):
            config_location = HubLocation(location.repo, CONFIG_FILE, location.revision)
            try:
                config_path = download(config_location, tqdm_class=transfers.bar_class, force=force)
            except MissingHubFileError:
                config_path = None
            if config_path is not None:
                config = read_config(config_path)
                commit = config_path.parent.name
                weights = HubLocation(location.repo, config.get("weights_file", DEFAULT_HUB_FILE), commit)
                path = download(weights, tqdm_class=transfers.bar_class, force=force)
                expected = config.get("sha256")
        if path is None:
            path = download(location, tqdm_class=transfers.bar_class, force=force)
        status = None
    if expected:
        verify_sha256(path, expected, remedy=f"Download it again: `dgiqa weights download {label} --force`.")
    if status is None:
        status = "downloaded" if transfers.bytes > before else "cached"
    commit = path.parent.name if status != "local" else None
    return {
        "name": label,
        "status": status,
        "path": str(path),
        "size": path.stat().st_size,
        "commit": commit,
        "sha256_checked": bool(expected),
    }


@weights_app.command()
def download(
    names: Annotated[
        list[str],
        typer.Argument(
            help="Registry names (see `dgiqa weights list`) or hf://OWNER/REPO\\[/FILE].", show_default=False
        ),
    ],
    revision: Annotated[
        str | None,
        typer.Option(
            help="Branch, tag or commit to download (default: the registry's, else main).", show_default=False
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if the cache has the file.")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fetch weights into the Hugging Face cache (HF_HOME / HF_HUB_CACHE), so that scoring works offline.

    A second call downloads nothing. Checksums known to the registry (or to config.json) are verified.
    """
    from dgiqa_cli.weights import WeightsError

    targets = _download_targets(names)

    rows, failed = [], []
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=_cli.err,
        transient=True,
        disable=quiet,
    )
    transfers = _Transfers(progress)
    with progress:
        for label, entry, uri in targets:
            try:
                rows.append(_fetch(label, entry, uri, revision, force, transfers))
            except WeightsError as exc:
                failed.append((label, str(exc)))
                rows.append({"name": label, "status": "failed", "error": str(exc)})
    if as_json:
        _print_json(rows)
    else:
        table = Table(header_style="bold")
        for column in ("name", "status", "size", "path"):
            table.add_column(column, overflow="fold", justify="right" if column == "size" else "left")
        for row in rows:
            if row["status"] == "failed":
                table.add_row(escape(row["name"]), "[red]failed[/]", "", "")
            else:
                table.add_row(escape(row["name"]), row["status"], human_size(row["size"]), escape(row["path"]))
        _cli.out.print(table)
    for label, message in failed:
        text = message if message.startswith(f"{label}:") else f"{label}: {message}"
        _cli.err.print(f"[bold red]error:[/] {escape(text)}", highlight=False)
    raise typer.Exit(EXIT_WEIGHTS if failed else EXIT_OK)


# -- import ---------------------------------------------------------------------------------------


@weights_app.command("import")
def import_weights(
    file: Annotated[Path, typer.Argument(help="The authors' checkpoint (.pth, .bin or .safetensors).")],
    name: Annotated[str, typer.Option("--name", "-n", help="Name to use with --weights from now on.")],
    depth_model: Annotated[
        DepthModel | None,
        typer.Option(
            help="The depth model the DGIQA weights were trained with (default: vitl, as the authors).",
            show_default=False,
        ),
    ] = None,
    trained_on: Annotated[
        str | None, typer.Option(help="Training set, e.g. KonIQ-10k (recorded in config.json).", show_default=False)
    ] = None,
    score_range: Annotated[
        tuple[float, float] | None,
        typer.Option(
            metavar="LOW HIGH",
            help="LOW HIGH of the scores (default: 0 1 for DGIQA, unbounded for Life-IQA).",
            show_default=False,
        ),
    ] = None,
    arch: Annotated[
        Architecture | None,
        typer.Option(
            "--arch", help="Expected architecture (default: detected from the tensor names).", show_default=False
        ),
    ] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="Where the file was published (URL).", show_default=False)
    ] = None,
    license: Annotated[
        str | None, typer.Option("--license", help="Licence of the source weights.", show_default=False)
    ] = None,
    citation: Annotated[str | None, typer.Option(help="How to cite the weights.", show_default=False)] = None,
    description: Annotated[str | None, typer.Option(help="One line about these weights.", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace weights already imported under NAME.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Convert a checkpoint to model.safetensors + config.json and register it under NAME.

    The architecture is detected from the tensor names and the weights must load into it strictly.
    Files go to $DGIQA_HOME (default ~/.local/share/dgiqa)/models/NAME.
    """
    from dgiqa_cli.weights.importing import import_checkpoint

    with _cli.busy("Converting…"):
        result = import_checkpoint(
            file,
            name,
            arch=arch.value if arch else None,
            depth_model=depth_model.value if depth_model else None,
            trained_on=trained_on,
            score_range=score_range,
            source_url=source,
            license=license,
            citation=citation,
            description=description,
            force=force,
        )
    config = result.config
    if as_json:
        _print_json({"name": name, "folder": str(result.folder), "config": config})
    else:
        _print_fields(
            [
                ("name", name),
                ("architecture", config["architecture"]),
                ("trained on", config["trained_on"] or "-"),
                ("score range", _range_text(config["score_range"], result.entry.kind)),
                ("depth model", config["depth_model"] or "-"),
                ("parameters", f"{config['parameters']:,}"),
                ("folder", str(result.folder)),
                ("sha256", config["sha256"]),
                ("source sha256", config["source"]["sha256"]),
            ]
        )
    for note in result.notes:
        _note(f"note: {escape(note)}")
    option = "--depth-weights" if result.entry.kind == "depth" else "--weights"
    _note(f"imported {escape(str(file))} as [bold]{escape(name)}[/]; use it with {option} {escape(name)}")


# -- info -----------------------------------------------------------------------------------------


@weights_app.command()
def info(
    spec: Annotated[
        str,
        typer.Argument(
            help="A registry or imported name, a weights file, a weights folder or hf://OWNER/REPO (cached).",
            show_default=False,
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Architecture, parameter count, dtype, sha256 and source of some weights; nothing is downloaded.

    Says whether the file is a known release (its sha256 is in the registry) and exits 1 if it fails
    its checksum or does not load.
    """
    from dgiqa_cli.weights.describe import describe

    report = describe(spec)
    if as_json:
        _print_json(report)
    else:
        known = report["known_release"]
        if known:
            known_text = f"yes: {known['name']} ({known['origin']} {known['kind']}, {known['as']})"
        else:
            known_text = "no (its sha256 is not in the registry)"
        options = report["model_config"]
        kind = "depth" if (report["architecture"] or "").startswith("depth-anything-") else "model"
        _print_fields(
            [
                ("weights", report["name"]),
                ("file", report["file"]),
                ("architecture", (report["architecture"] or "-") + (f" {options}" if options else "")),
                ("parameters", f"{report['parameters']:,}" if report["parameters"] is not None else "-"),
                ("tensors", report["tensors"] if report["tensors"] is not None else "-"),
                ("dtype", report["dtype"] or "-"),
                ("size", human_size(report["size"])),
                ("sha256", report["sha256"]),
                ("checksum", checksum_text(report)),
                ("known release", known_text),
                ("trained on", report["trained_on"] or "-"),
                ("score range", _range_text(report["score_range"], kind)),
                ("depth model", report["depth_model"] or "-"),
                ("source", report["source"] or "-"),
                ("source sha256", report["source_sha256"] or "-"),
                ("licence", report["license"] or "-"),
                ("loads", {True: "yes (strict)", False: "no", None: "-"}[report["loads"]]),
            ]
        )
    if report["error"]:
        raise _fail(report["error"], EXIT_WEIGHTS)


# -- push -----------------------------------------------------------------------------------------


@weights_app.command()
def push(
    spec: Annotated[str, typer.Argument(help="An imported name, or a folder with config.json + model.safetensors.")],
    repo: Annotated[str, typer.Option("--repo", metavar="OWNER/REPO", help="The Hub repository (created if needed).")],
    private: Annotated[bool, typer.Option("--private", help="Create the repository as private.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the files, their sizes and the model card; send nothing.")
    ] = False,
    token: Annotated[
        str | None,
        typer.Option(help="Hub write token (default: HF_TOKEN or the `hf auth login` token).", show_default=False),
    ] = None,
    message: Annotated[str | None, typer.Option(help="Commit message.", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish converted weights to the Hub with a model card (README.md): config.json + model.safetensors."""
    from dgiqa_cli.weights.push import plan_push
    from dgiqa_cli.weights.push import push as push_weights

    plan = plan_push(spec, repo, private)
    visibility = "private" if plan.private else "public"
    files = [{"path": path, "size": size} for path, size in plan.files]
    if dry_run:
        if as_json:
            _print_json(
                {
                    "dry_run": True,
                    "repo": plan.repo,
                    "private": plan.private,
                    "endpoint": plan.endpoint,
                    "folder": str(plan.folder),
                    "files": files,
                    "total_size": plan.total_size,
                    "card": plan.card,
                }
            )
        else:
            _cli.out.print(
                f"Would create the {visibility} model repository {escape(plan.repo)} on {escape(plan.endpoint)} "
                f"(if needed) and upload from {escape(str(plan.folder))}:",
                highlight=False,
            )
            table = Table(header_style="bold")
            table.add_column("file")
            table.add_column("size", justify="right")
            table.add_column("bytes", justify="right")
            for path, size in plan.files:
                table.add_row(path, human_size(size), str(size))
            table.add_row("[bold]total[/]", human_size(plan.total_size), str(plan.total_size))
            _cli.out.print(table)
            _cli.out.print("README.md (model card):", highlight=False)
            _cli.out.print(plan.card, highlight=False, markup=False, emoji=False)
        _note("dry run: nothing was sent")
        return
    with _cli.busy(f"Uploading to {plan.repo}…"):
        commit_url = push_weights(plan, token=token, message=message)
    if as_json:
        _print_json(
            {"dry_run": False, "repo": plan.repo, "private": plan.private, "files": files, "commit_url": commit_url}
        )
    else:
        _cli.out.print(commit_url, highlight=False)
    option = "--depth-weights" if plan.config["architecture"].startswith("depth-anything-") else "--weights"
    _note(f"pushed {len(files)} files to {escape(plan.repo)} ({visibility}); use it with {option} hf://{plan.repo}")


_cli.app.add_typer(weights_app, name="weights")
