"""What a run leaves in ``--out``: a Hub-format weights folder, the epoch log and the curves.

``config.json`` + ``model.safetensors`` + ``README.md`` (the model card, with the training data, the split's
sha256, the settings and the validation and test metrics), so that ``dgiqa score --weights DIR`` and
``dgiqa weights push DIR`` take the folder as it is; ``training_log.csv`` (one row per epoch) and
``curves.png`` (loss and validation SRCC per epoch) beside them. Every file is written to a temporary name
and renamed, so a folder read while a run goes on holds whole files.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from dgiqa_cli.io.atomic import atomic_write
from dgiqa_cli.models.spec import spec_for
from dgiqa_cli.version import __version__
from dgiqa_cli.weights.card import model_card
from dgiqa_cli.weights.digests import sha256_of
from dgiqa_cli.weights.hubformat import CONFIG_FILE, CONFIG_FORMAT, CONFIG_FORMAT_VERSION, DEFAULT_HUB_FILE
from dgiqa_cli.weights.importing import dtype_names, storable_state_dict
from dgiqa_cli.weights.registry import model_entries

LOG_FILE = "training_log.csv"
CURVES_FILE = "curves.png"
CARD_FILE = "README.md"
LOG_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_srcc",
    "val_loss",
    "val_srcc",
    "val_plcc",
    "train_images",
    "train_images_per_s",
    "seconds",
    "best",
)


def _atomic_write(path: Path, write) -> None:
    with atomic_write(path) as f:
        write(f)


def weights_config(name: str, initial, training: dict) -> dict:
    """``config.json`` for the fine-tuned weights (sha256 and size are filled in when the file is written)."""
    arch = initial.arch
    card = initial.card
    citation = card.citation if card is not None and card.citation else model_entries()[f"{arch}-koniq"].citation
    config = {
        "format": CONFIG_FORMAT,
        "format_version": CONFIG_FORMAT_VERSION,
        "name": name,
        "architecture": arch,
        "model_config": dict(initial.model_config),
        "weights_file": DEFAULT_HUB_FILE,
        "sha256": None,
        "size": None,
        "dtype": "float32",
        "parameters": sum(p.numel() for p in initial.network.parameters()),
        "depth_model": initial.depth_model,
        "score_range": list(spec_for(arch).score_range),
        "higher_is_better": not spec_for(arch).lower_better,
        "trained_on": training["data"]["name"],
        "description": f"{arch} fine-tuned on {training['data']['name']} with dgiqa finetune, from {initial.label}",
        "citation": citation,
        "source": {
            "file": initial.label,
            "sha256": initial.sha256,
            "url": card.source if card is not None else "",
            "license": (card.license if card is not None else "") or "",
        },
        "training": training,
        "conversion": {"tool": f"dgiqa {__version__}", "steps": ["trained with dgiqa finetune (see training)"]},
    }
    if initial.input_size is not None:
        config["input_size"] = list(initial.input_size)
    return config


def write_config(folder: Path, config: dict) -> None:
    """``config.json`` and the model card made from it (``dgiqa weights push`` makes the same card)."""
    text = json.dumps(clean_floats(config), indent=2, ensure_ascii=False, allow_nan=False, default=_jsonable) + "\n"
    _atomic_write(folder / CONFIG_FILE, lambda f: f.write(text.encode("utf-8")))
    card = model_card(json.loads(text), f"local/{config['name']}")
    _atomic_write(folder / CARD_FILE, lambda f: f.write(card.encode("utf-8")))


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def write_weights(folder: Path, network: torch.nn.Module, config: dict) -> None:
    """``model.safetensors`` (float32, as ``dgiqa weights import`` stores them), then its config and card."""
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    storable, _ = storable_state_dict(config["architecture"], state)
    path = folder / DEFAULT_HUB_FILE
    _atomic_write(path, lambda f: f.write(_safetensors_bytes(storable)))
    config = {**config, "sha256": sha256_of(path), "size": path.stat().st_size, "dtype": dtype_names(storable)}
    write_config(folder, clean_floats(config))


def _safetensors_bytes(state: dict) -> bytes:
    from safetensors.torch import save

    return save(state, metadata={"format": "pt"})


def clean_floats(value):
    """NaN and infinities (e.g. an undefined SRCC) as null: JSON has no NaN."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: clean_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_floats(v) for v in value]
    return value


def write_log(folder: Path, rows: list[dict]) -> None:
    def write(f):
        text = _csv_text(rows)
        f.write(text.encode("utf-8"))

    _atomic_write(folder / LOG_FILE, write)


def _csv_text(rows: list[dict]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def plot_curves(folder: Path, rows: list[dict]) -> Path:
    """``curves.png``: training and validation loss, and validation (and training) SRCC, per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [row["epoch"] for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    left.plot(epochs, [row["train_loss"] for row in rows], "o-", label="training")
    left.plot(epochs, [row["val_loss"] for row in rows], "s-", label="validation")
    left.set(xlabel="epoch", ylabel="loss", title="Loss")
    left.legend()
    right.plot(epochs, [row["val_srcc"] for row in rows], "s-", label="validation")
    right.plot(epochs, [row["train_srcc"] for row in rows], "o--", alpha=0.6, label="training (random crops)")
    best = [row["epoch"] for row in rows if row.get("best")]
    if best:
        right.axvline(best[-1], color="grey", linestyle=":", label=f"chosen: epoch {best[-1]}")
    right.set(xlabel="epoch", ylabel="SRCC", title="Spearman rank correlation")
    right.legend()
    for axis in (left, right):
        axis.xaxis.get_major_locator().set_params(integer=True)
    path = folder / CURVES_FILE
    _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path
