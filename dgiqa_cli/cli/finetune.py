"""``dgiqa finetune``: train DGIQA or Life-IQA on rated pictures into a Hub-format weights folder."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from dgiqa_cli.cli.common import (
    GroupColumnOpt,
    LowerIsBetterOpt,
    MosColumnOpt,
    PathColumnOpt,
    QuietOpt,
    RootOpt,
    SplitColumnOpt,
    app,
    err,
    fail,
    out,
    progress_bar,
    run_outcome,
    setup_logging,
)
from dgiqa_cli.cli.options import DepthModelOpt, DepthWeightsOpt, DeviceOpt, ModelOpt
from dgiqa_cli.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, DGIQAError, UsageError
from dgiqa_cli.inference.defaults import DEFAULT_DEVICE

# One set of ratings: a single labels file or data-set folder (eval's --labels and folders may be repeated).
OneLabelsOpt = Annotated[
    Path | None,
    typer.Option(
        "--labels",
        help="A CSV or Parquet file of ratings: columns path and mos, optional split and group.",
        show_default=False,
    ),
]
DatasetOpt = Annotated[
    Path | None,
    typer.Option(
        help="A data-set folder as distributed (KonIQ-10k, KADID-10k, LIVE Challenge, SPAQ).", show_default=False
    ),
]


class TrainPrecision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class ProgressEvents:
    """Draws the run's stages as progress bars on stderr (one bar per epoch, with its ETA)."""

    def __init__(self, progress, quiet: bool):
        self.progress, self.quiet, self.task = progress, quiet, None

    def stage(self, text: str, total: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(text, total=total or None, current="")

    def advance(self, done: int, note: str = "") -> None:
        self.progress.update(self.task, completed=done, current=escape(note))

    def epoch_done(self, row: dict) -> None:
        if not self.quiet:
            err.print(
                f"epoch {row['epoch']}: loss {row['train_loss']:.4f}, train SRCC {row['train_srcc']:.3f}, "
                f"validation SRCC {row['val_srcc']:.3f}, {row['train_images_per_s']:.2f} images/s"
                + (" [green](best so far)[/]" if row["best"] else ""),
                highlight=False,
            )

    def message(self, text: str) -> None:
        err.print(f"[yellow]{escape(text)}[/]", highlight=False)


@app.command()
def finetune(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder: the Hub-format weights and the run's logs.")],
    labels: OneLabelsOpt = None,
    dataset: DatasetOpt = None,
    root: RootOpt = None,
    path_column: PathColumnOpt = "path",
    mos_column: MosColumnOpt = None,
    split_column: SplitColumnOpt = "split",
    group_column: GroupColumnOpt = "group",
    lower_is_better: LowerIsBetterOpt = False,
    init: Annotated[
        str,
        typer.Option(
            help="Where training starts: a registry name, a .pth/.safetensors file, a Hub-format folder or hf://… "
            "of DGIQA or Life-IQA weights; or imagenet (timm's ImageNet Swin backbones, downloaded; see "
            "--backbone-weights)."
        ),
    ] = "dgiqa-koniq",
    model: ModelOpt = None,
    depth_model: DepthModelOpt = None,
    depth_weights: DepthWeightsOpt = None,
    backbone_weights: Annotated[
        str | None,
        typer.Option(help="With --init imagenet: a local file of timm's ImageNet Swin weights instead of a download."),
    ] = None,
    freeze: Annotated[
        str, typer.Option(help="none, backbones (train bridges and heads only), or a comma list of modules.")
    ] = "none",
    epochs: Annotated[
        int, typer.Option(min=1, help="Passes over the training pictures (the best one by validation SRCC is kept).")
    ] = 10,
    batch_size: Annotated[int, typer.Option(min=1, help="Pictures per batch (one random crop each).")] = 8,
    accumulate: Annotated[int, typer.Option(min=1, help="Batches whose gradients add up to one optimiser step.")] = 1,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak learning rate of AdamW (after warm-up).")] = 5e-5,
    weight_decay: Annotated[float, typer.Option(min=0.0, help="AdamW's decoupled weight decay.")] = 0.01,
    warmup: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Fraction of the steps with a linear warm-up; then a cosine to 0.")
    ] = 0.05,
    loss: Annotated[str, typer.Option(help="mse, l1, plcc, rank, or a sum such as mse+plcc.")] = "mse",
    precision: Annotated[
        TrainPrecision, typer.Option(help="auto: bf16 autocast on GPUs that have it, else fp32. bf16 on CPUs with it.")
    ] = TrainPrecision.auto,
    seed: Annotated[int, typer.Option(help="Seeds the split, crops, flips, dropout and initialisation.")] = 0,
    val_fraction: Annotated[
        float, typer.Option(help="Without a validation split in the labels: the part of train held out (by group).")
    ] = 0.2,
    val_crops: Annotated[int, typer.Option(min=1, help="Official crops per validation picture.")] = 5,
    eval_crops: Annotated[int, typer.Option(min=1, help="Crops per test picture in the final evaluation.")] = 20,
    flip: Annotated[bool, typer.Option(help="Random horizontal flips of the training crops (and depth crops).")] = True,
    update_bn_stats: Annotated[
        bool,
        typer.Option(
            help="Re-estimate BatchNorm statistics from the training batches (default: keep them; "
            "batches of a few crops are too small). Their scale and shift train either way."
        ),
    ] = False,
    depth_cache: Annotated[
        bool, typer.Option(help="Keep each picture's depth map on disk ($DGIQA_CACHE/depth-maps), made once.")
    ] = True,
    workers: Annotated[int, typer.Option(min=0, help="Processes decoding pictures (0: in this one).")] = 0,
    device: DeviceOpt = DEFAULT_DEVICE,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run's summary as JSON on stdout.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune DGIQA (or Life-IQA) on your own rated pictures; --out becomes a weights folder.

    Random 224 crops of the 384-short-side frame (Life-IQA: 512x384) and the same cut of the whole picture's
    depth map; depth maps are made once and cached. The epoch with the best validation SRCC is kept; the test
    split, if the labels have one, is scored once at the end by `dgiqa eval`'s code. A checkpoint is written
    after every epoch: Ctrl-C, then the same command with --resume, continues. Pictures that cannot be read
    are reported and left out (exit code 1). Examples:

      dgiqa finetune --labels ratings.csv --out my-model --freeze backbones --epochs 5

      dgiqa finetune --dataset ~/data/kadid10k --init dgiqa-koniq --out kadid-ft --loss mse+plcc --lr 2e-5

      dgiqa score photo.jpg --weights my-model
    """
    from dgiqa_cli.evaluation.labels import load_labels
    from dgiqa_cli.io.images import ImageError
    from dgiqa_cli.training import FinetuneSettings
    from dgiqa_cli.training.loop import Run
    from dgiqa_cli.training.report import clean_floats

    setup_logging(quiet)
    if (labels is None) == (dataset is None):
        raise fail("give the ratings: --labels FILE or --dataset FOLDER (one of them)", EXIT_USAGE)
    labelled = load_labels(
        labels,
        dataset=dataset,
        root=root,
        path_column=path_column,
        mos_column=mos_column,
        split_column=split_column,
        group_column=group_column,
        lower_is_better=lower_is_better,
    )
    settings = FinetuneSettings(
        init=init,
        out=str(out_dir),
        model=model.value if model else None,
        depth_model=depth_model.value if depth_model else None,
        depth_weights=depth_weights,
        backbone_weights=backbone_weights,
        freeze=freeze,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup=warmup,
        loss=loss,
        precision=precision.value,
        accumulate=accumulate,
        seed=seed,
        val_fraction=val_fraction,
        val_crops=val_crops,
        eval_crops=eval_crops,
        flip=flip,
        update_bn_stats=update_bn_stats,
        workers=workers,
        device=device,
        depth_cache=depth_cache,
    )

    def kept() -> str:  # asked when the run stops, so it knows whether an epoch finished
        checkpoint = out_dir / "checkpoint.pt"
        where = f"the last finished epoch is saved in {checkpoint}" if checkpoint.exists() else "no epoch finished"
        return f"{where}; continue with the same command and --resume"

    progress = progress_bar(quiet)
    try:
        with run_outcome(kept), progress:
            run = Run(labelled, settings, resume=resume, events=ProgressEvents(progress, quiet))
            result = run.run()
    except ImageError as exc:  # a picture that changed or vanished after it was read once: stop, never replace it
        raise fail(f"{exc}; the last finished epoch is in --out, continue with --resume", EXIT_FAILED) from None
    except DGIQAError:
        raise
    except ValueError as exc:  # the network's own checks of --init, --freeze, ... (plain ValueErrors)
        raise UsageError(str(exc)) from None

    summary = {
        "out": str(result.out),
        "best_epoch": result.best_epoch,
        "validation": {k: v for k, v in result.validation.items() if k.startswith("val")},
        "test": result.test,
        "split_sha256": result.split.sha256,
        "skipped": [{"path": s.path, "reason": s.reason} for s in result.skipped],
        "epochs": result.rows,
    }
    if as_json:
        out.print_json(json.dumps(clean_floats(summary), default=str))
    elif not quiet:
        test = summary["test"] or {}
        test_text = f", test SRCC {test['srcc']:.3f} (n={test.get('n', '?')})" if test.get("srcc") is not None else ""
        err.print(
            f"chose epoch {result.best_epoch} (validation SRCC {result.validation['val_srcc']:.3f}){test_text}; "
            f"weights in {escape(str(result.out))}: dgiqa score IMAGE --weights {escape(str(result.out))}",
            highlight=False,
        )
    for skipped in result.skipped:
        err.print(f"[red]skipped[/] {escape(skipped.path)}: {escape(skipped.reason)}", highlight=False)
    raise typer.Exit(EXIT_FAILED if result.skipped else EXIT_OK)
