"""The training run: optimiser, schedule, epochs, validation, model selection, checkpoints, the final test.

AdamW on the parameters that train; the learning rate rises linearly over the warm-up steps, then follows a
cosine to zero. Each epoch sees every training picture once, as one random 224 crop (flipped at random where
the paper flips); validation scores the validation pictures as scoring does (the official crops, no flip) and
the epoch with the best validation SRCC is kept. The test split is scored once, at the end, by ``dgiqa eval``'s
code, with the chosen weights read back from the output folder as ``dgiqa score --weights DIR`` reads them.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from dgiqa_cli.errors import UsageError
from dgiqa_cli.evaluation.metrics import correlations
from dgiqa_cli.inference import preprocess as pp
from dgiqa_cli.inference.runtime import autocast, pick_device
from dgiqa_cli.models.spec import spec_for
from dgiqa_cli.training import data, report
from dgiqa_cli.training.checkpoint import load_checkpoint, restore_rng_states, save_checkpoint
from dgiqa_cli.training.losses import make_loss
from dgiqa_cli.training.network import Initial, freeze, load_initial, set_train_mode
from dgiqa_cli.training.splits import Split, load_split, make_split

log = logging.getLogger("dgiqa")

# Settings that a resumed run must share with the run it continues (the others, e.g. --workers, may change).
RESUME_FIXED = (
    "init",
    "model",
    "depth_model",
    "freeze",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "warmup",
    "loss",
    "precision",
    "accumulate",
    "seed",
    "val_fraction",
    "val_crops",
    "flip",
    "update_bn_stats",
)


class FinetuneError(UsageError):
    """A run that cannot start or continue, in one line that says what to do."""


@dataclass
class FinetuneSettings:
    init: str
    out: str
    model: str | None = None
    depth_model: str | None = None
    depth_weights: str | None = None
    backbone_weights: str | None = None
    freeze: str = "none"
    epochs: int = 10
    batch_size: int = 8
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.05  # fraction of all optimiser steps
    loss: str = "mse"
    precision: str = "auto"
    accumulate: int = 1
    seed: int = 0
    val_fraction: float = 0.2
    val_crops: int = 5
    eval_crops: int = 20
    flip: bool = True
    update_bn_stats: bool = False
    workers: int = 0
    device: str = "auto"
    depth_cache: bool = True
    cache_dir: str | None = None


class Events:
    """What a run reports while it runs; the command line draws progress bars from these. No-ops here."""

    def stage(self, text: str, total: int) -> None: ...
    def advance(self, done: int, note: str = "") -> None: ...
    def epoch_done(self, row: dict) -> None: ...
    def message(self, text: str) -> None: ...


@dataclass
class FinetuneResult:
    out: Path
    rows: list[dict]
    best_epoch: int | None
    validation: dict
    test: dict | None
    skipped: list[data.Skipped]
    split: Split
    config: dict = field(default_factory=dict)


def pick_training_precision(name: str, device: torch.device) -> str:
    """``auto``: bf16 on GPUs that have it, else fp32. ``bf16`` on a CPU only where the CPU supports it."""
    if name not in ("auto", "fp32", "bf16"):
        raise FinetuneError(f"unknown precision {name!r} for training; choose auto, fp32 or bf16")
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if name == "bf16" and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise FinetuneError("--precision bf16: this CPU has no bf16 support (AVX512-BF16 or AMX); use fp32")
    return name


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from 1 to 0 over the rest."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Run:
    """One fine-tuning run into ``settings.out``; ``run()`` trains (or resumes) to the end."""

    def __init__(self, labelled, settings: FinetuneSettings, *, resume: bool = False, events: Events | None = None):
        self.labelled, self.settings, self.resume, self.events = labelled, settings, resume, events or Events()
        self.out = Path(settings.out)
        self.checkpoint = load_checkpoint(self.out) if resume else None
        if self.checkpoint is not None:
            self.check_same_settings(self.checkpoint["settings"])
        elif (self.out / "checkpoint.pt").exists() or (self.out / "model.safetensors").exists():
            raise FinetuneError(f"{self.out}: holds a run already; continue it with --resume, or choose another --out")
        if settings.epochs < 1 or settings.batch_size < 1 or settings.accumulate < 1 or settings.val_crops < 1:
            raise FinetuneError("--epochs, --batch-size, --accumulate and --val-crops must be at least 1")
        self.loss_fn = make_loss(settings.loss)
        self.device = pick_device(settings.device)
        self.precision = pick_training_precision(settings.precision, self.device)

    def check_same_settings(self, saved: dict) -> None:
        changed = [k for k in RESUME_FIXED if saved.get(k) != getattr(self.settings, k)]
        if changed:
            what = ", ".join(f"--{k.replace('_', '-')} {saved.get(k)!r}" for k in changed)
            raise FinetuneError(f"{self.out}: the run being resumed used {what}; resume with the same settings")

    # -- setting up --------------------------------------------------------------------------------------------

    def set_up(self) -> None:
        s = self.settings
        seed_everything(s.seed)
        if self.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.initial: Initial = load_initial(
            s.init,
            model=s.model,
            depth_model=s.depth_model,
            depth_weights=s.depth_weights,
            backbone_weights=s.backbone_weights,
        )
        if self.checkpoint is not None and self.checkpoint["init_sha256"] != self.initial.sha256:
            raise FinetuneError(f"--init {s.init}: not the weights the run being resumed started from (sha256 differs)")
        self.arch = self.initial.arch
        self.spec = spec_for(self.arch)
        self.network = self.initial.network.to(self.device)
        self.frozen = freeze(self.network, self.arch, s.freeze)
        self.trainable = [p for p in self.network.parameters() if p.requires_grad]
        self.split = self.make_split()
        by_path = {image.path: image for image in self.labelled.images}
        train = [by_path[p] for p in self.split.paths("train")]
        validation = [by_path[p] for p in self.split.paths("validation")]
        low, high = min(i.mos for i in train), max(i.mos for i in train)
        self.scale = data.LabelScale(
            low, high, self.labelled.lower_is_better, bounded=None not in self.spec.score_range
        )
        self.depth_stage = None
        self.cache = None
        self.scratch = None  # without the cache: depth pictures live in a scratch folder, remade every epoch
        if self.spec.needs_depth:
            self.depth_stage = data.DepthStage(self.initial.depth.network, self.device)
            folder = Path(s.cache_dir) if s.cache_dir else default_cache_dir()
            if not s.depth_cache:
                import tempfile

                folder = self.scratch = Path(tempfile.mkdtemp(prefix=".depth-scratch-", dir=self.out))
            self.cache = data.DepthCache(folder, self.initial.depth.sha256)
        self.train, skipped_train = self.prepare(train, "Reading training pictures")
        self.validation, skipped_val = self.prepare(validation, "Reading validation pictures")
        self.skipped = skipped_train + skipped_val
        if len(self.train) < 2 or not self.validation:
            raise FinetuneError(
                f"{len(self.train)} training and {len(self.validation)} validation pictures could be read: too few"
            )
        steps = data.steps_per_epoch(len(self.train), s.batch_size, s.accumulate)
        self.total_steps = steps * s.epochs
        self.warmup_steps = round(s.warmup * self.total_steps)
        self.optimizer = torch.optim.AdamW(self.trainable, lr=s.lr, weight_decay=s.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, self.total_steps, self.warmup_steps)
        )

    def make_split(self) -> Split:
        s = self.settings
        if self.checkpoint is not None:
            return load_split(self.out, self.checkpoint["split_sha256"])
        try:
            split = make_split(self.labelled.images, s.val_fraction, s.seed)
        except ValueError as exc:
            raise FinetuneError(str(exc)) from None
        self.out.mkdir(parents=True, exist_ok=True)
        split.save(self.out)
        return split

    def prepare(self, images, what: str):
        self.events.stage(what, len(images))
        samples, skipped = data.prepare_samples(
            images,
            self.scale,
            self.arch,
            self.initial.input_size,
            self.depth_stage,
            self.cache,
            lambda done, total, path: self.events.advance(done, Path(path).name),
        )
        return samples, skipped

    # -- training ----------------------------------------------------------------------------------------------

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        x = pp.normalize_uint8(rgb.to(self.device))
        with autocast(self.device, self.precision):
            if self.spec.needs_depth:
                d = pp.normalize_uint8(depth.to(self.device)[..., None].expand(-1, -1, -1, 3))
                return self.network(x, d).float()
            return self.network(x).float()

    def train_epoch(self, epoch: int) -> dict:
        s = self.settings
        if not s.depth_cache and self.spec.needs_depth and epoch > 0:  # the measurement without the cache
            import shutil

            shutil.rmtree(self.cache.folder, ignore_errors=True)
            self.prepare(self.train + self.validation, "Depth maps (no cache)")
        plan = data.epoch_plan(self.train, s.seed, epoch, s.flip)
        batches = data.loader(
            data.CropSet(self.train, plan, self.arch, self.initial.input_size, self.cache), s.batch_size, s.workers
        )
        set_train_mode(self.network, self.frozen, s.update_bn_stats)
        self.events.stage(f"Epoch {epoch + 1}/{s.epochs}", len(plan))
        losses, preds, targets, done = [], [], [], 0
        batch_count = len(batches)
        self.optimizer.zero_grad(set_to_none=True)
        for i, (rgb, depth, target, _) in enumerate(batches):
            pred = self.forward(rgb, depth)
            target = target.to(self.device)
            loss = self.loss_fn(pred, target)
            group_end = min(batch_count, (i // s.accumulate + 1) * s.accumulate)
            (loss / (group_end - (i // s.accumulate) * s.accumulate)).backward()
            if i + 1 == group_end:
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()) * len(target))
            preds += pred.detach().cpu().tolist()
            targets += target.cpu().tolist()
            done += len(target)
            self.events.advance(done, f"loss {float(loss.detach()):.4f}")
        srcc = correlations(preds, targets)["srcc"]
        return {"train_loss": sum(losses) / done, "train_srcc": srcc, "train_images": done}

    @torch.inference_mode()
    def predict(self, samples: list[data.Sample], crops: int, what: str) -> np.ndarray:
        """Mean prediction per sample over the official crops, in eval mode (scoring's protocol)."""
        plan = data.validation_plan(samples, crops)
        batches = data.loader(
            data.CropSet(samples, plan, self.arch, self.initial.input_size, self.cache),
            max(self.settings.batch_size, 1),
            self.settings.workers,
        )
        self.network.eval()
        self.events.stage(what, len(plan))
        sums, counts, done = np.zeros(len(samples)), np.zeros(len(samples)), 0
        for rgb, depth, _, index in batches:
            pred = self.forward(rgb, depth).cpu().double().numpy()
            np.add.at(sums, index.numpy(), pred)
            np.add.at(counts, index.numpy(), 1)
            done += len(pred)
            self.events.advance(done)
        return sums / counts

    def validate(self) -> dict:
        pred = self.predict(self.validation, self.settings.val_crops, "Validation")
        target = [sample.target for sample in self.validation]
        metrics = correlations(pred, target)
        return {
            "val_srcc": metrics["srcc"],
            "val_plcc": metrics["plcc"],
            "val_loss": float(self.loss_fn(torch.tensor(pred), torch.tensor(target, dtype=torch.float64))),
        }

    # -- the run -----------------------------------------------------------------------------------------------

    def run(self) -> FinetuneResult:
        self.set_up()
        try:
            return self.epochs()
        finally:
            if self.scratch is not None:
                import shutil

                shutil.rmtree(self.scratch, ignore_errors=True)

    def epochs(self) -> FinetuneResult:
        s = self.settings
        rows, best_epoch, best_srcc, best_loss, start = [], None, -math.inf, math.inf, 0
        if self.checkpoint is not None:
            start, rows = self.restore(self.checkpoint)
            best_epoch, best_srcc = self.checkpoint["best_epoch"], self.checkpoint["best_srcc"]
            best_loss = rows[best_epoch - 1]["val_loss"] if best_epoch else math.inf
            self.events.message(f"resuming after epoch {start} of {s.epochs}")
        for epoch in range(start, s.epochs):
            began = time.perf_counter()
            row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
            row.update(self.train_epoch(epoch))
            train_seconds = time.perf_counter() - began
            row.update(self.validate())
            row["seconds"] = time.perf_counter() - began
            row["train_images_per_s"] = row["train_images"] / train_seconds
            # The best validation SRCC; a tie goes to the lower validation loss. Never the test split.
            srcc = row["val_srcc"]
            improved = not math.isnan(srcc) and (
                srcc > best_srcc or (srcc == best_srcc and row["val_loss"] < best_loss)
            )
            if improved or best_epoch is None:
                best_epoch, best_srcc = epoch + 1, srcc if improved else best_srcc
                best_loss = row["val_loss"]
                report.write_weights(self.out, self.network, self.weights_config(rows + [row], best_epoch, None))
            row["best"] = best_epoch == epoch + 1
            rows.append(row)
            report.write_log(self.out, rows)
            self.save(epoch + 1, rows, best_epoch, best_srcc)
            self.events.epoch_done(row)
        report.plot_curves(self.out, rows)
        test = self.test()
        config = self.weights_config(rows, best_epoch, test)
        report.write_config(self.out, config)
        validation = next(r for r in rows if r["epoch"] == best_epoch)
        return FinetuneResult(self.out, rows, best_epoch, validation, test, self.skipped, self.split, config)

    def save(self, epoch: int, rows: list[dict], best_epoch: int | None, best_srcc: float) -> None:
        """The checkpoint: what trains and every buffer (frozen parameters are --init's, checked by sha256)."""
        params = dict(self.network.named_parameters(remove_duplicate=False))
        model = {k: v for k, v in self.network.state_dict().items() if k not in params or params[k].requires_grad}
        save_checkpoint(
            self.out,
            {
                "epoch": epoch,
                "settings": asdict(self.settings),
                "init_sha256": self.initial.sha256,
                "split_sha256": self.split.sha256,
                "model": model,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rows": rows,
                "best_epoch": best_epoch,
                "best_srcc": best_srcc,
            },
        )

    def restore(self, checkpoint: dict) -> tuple[int, list[dict]]:
        missing = self.network.load_state_dict(checkpoint["model"], strict=False).unexpected_keys
        if missing:
            raise FinetuneError(f"{self.out}: the checkpoint holds tensors this model lacks ({missing[0]})")
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        restore_rng_states(checkpoint["rng"])  # last: nothing after this may draw before the next epoch
        return checkpoint["epoch"], list(checkpoint["rows"])

    def test(self) -> dict | None:
        """The chosen weights on the test split, by ``dgiqa eval``'s code; None when the labels have no test split."""
        if "test" not in {image.split for image in self.labelled.images}:
            self.events.message("the labels have no test split: no test metrics (validation only)")
            return None
        from dgiqa_cli.evaluation.protocol import evaluate_scorer
        from dgiqa_cli.inference.scorer import Scorer

        scorer = Scorer(
            str(self.out),
            depth_model=self.initial.depth_model,
            # The spec as given (a Hub folder's config.json may hold the network's sizes), else the file loaded.
            depth_weights=self.settings.depth_weights
            or (str(self.initial.depth.path) if self.initial.depth is not None else None),
            crops=self.settings.eval_crops,
            device=str(self.device),
            precision="fp32",
            backend="torch",
        )
        self.events.stage("Test split (dgiqa eval)", len(self.labelled.select("test").images))
        done = []

        def on_result(result) -> None:
            done.append(result)
            self.events.advance(len(done))

        evaluated = evaluate_scorer(scorer, self.labelled, split="test", workers=0, on_result=on_result)
        return evaluated.as_json()

    def weights_config(self, rows: list[dict], best_epoch: int | None, test: dict | None) -> dict:
        s = self.settings
        chosen = rows[best_epoch - 1] if best_epoch else {}
        training = {
            "data": {
                "name": self.labelled.name,
                "source": self.labelled.source,
                "split_sha256": self.split.sha256,
                "split_origin": self.split.origin,
                "counts": self.split.counts(),
                "used": {"train": len(self.train), "validation": len(self.validation)},
                "skipped": [{"path": k.path, "reason": k.reason} for k in self.skipped],
            },
            "labels": self.scale.as_dict(),
            "init": {"spec": s.init, "sha256": self.initial.sha256},
            "settings": {k: v for k, v in asdict(s).items() if k not in ("out", "cache_dir", "workers")},
            "frozen": self.frozen,
            "precision": self.precision,
            "device": str(self.device),
            "epochs_run": len(rows),
            "best_epoch": best_epoch,
            "validation": {k: v for k, v in chosen.items() if k.startswith("val")},
            "test": test,
        }
        return report.weights_config(self.out.name, self.initial, training)


def default_cache_dir() -> Path:
    from dgiqa_cli.weights.digests import cache_root

    return cache_root() / "depth-maps"


def finetune(labelled, settings: FinetuneSettings, *, resume: bool = False, events: Events | None = None):
    """Fine-tune on ``labelled`` (a :class:`LabelledSet`) as ``settings`` say; see :class:`Run`."""
    return Run(labelled, settings, resume=resume, events=events).run()
