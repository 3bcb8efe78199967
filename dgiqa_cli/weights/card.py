"""The model card (``README.md``) of a Hub repository in dgiqa's format, via ``huggingface_hub.ModelCard``."""

from __future__ import annotations

from huggingface_hub import ModelCard, ModelCardData

from dgiqa_cli.weights.hubformat import DEFAULT_HUB_FILE, kind_of_arch
from dgiqa_cli.weights.registry import AUTHORS_DEPTH_MODEL

# Hub licence identifiers a model card may use as they are; anything else becomes `license: other`.
HUB_LICENSES = {
    "apache-2.0",
    "mit",
    "bsd-2-clause",
    "bsd-3-clause",
    "cc-by-4.0",
    "cc-by-sa-4.0",
    "cc-by-nc-4.0",
    "cc-by-nc-sa-4.0",
    "cc-by-nc-nd-4.0",
    "gpl-3.0",
    "agpl-3.0",
    "lgpl-3.0",
    "openrail",
}
_YAML_ORDER = ["license", "license_name", "library_name", "tags", "pipeline_tag"]

_ARCH_TEXT = {
    "dgiqa": "DGIQA (Ramesh, Liu, Wang, Islam, 2025): depth-guided cross-attention and refinement over two "
    "Swin-T backbones, fed by a Depth Anything depth map; blind (no-reference) image quality",
    "life-iqa": "Life-IQA (Tang et al., 2025): GCN-enhanced layer interaction and mixture-of-experts feature "
    "decoupling on a Swin backbone; blind (no-reference) image quality",
}


def _arch_text(arch: str) -> str:
    if arch.startswith("depth-anything-"):
        encoder = arch.removeprefix("depth-anything-")
        return f"Depth Anything V1 with the ViT-{encoder[-1].upper()}/14 encoder: relative (inverse) depth"
    return _ARCH_TEXT[arch]


def _range_text(config: dict) -> str:
    if kind_of_arch(config["architecture"]) == "depth":
        return "not a quality score (relative inverse depth maps)"
    low, high = (config.get("score_range") or [None, None])[:2]
    direction = "higher is better" if config.get("higher_is_better", True) else "lower is better"
    if low is None and high is None:
        return f"unbounded (the training set's MOS scale); {direction}"
    return f"[{_num(low)}, {_num(high)}]; {direction}"


def _num(value) -> str:
    return "-inf" if value is None else f"{value:g}"


def card_data(config: dict) -> ModelCardData:
    """The card's metadata block: licence (a Hub identifier, else ``other``), library and tags."""
    arch = config["architecture"]
    depth = kind_of_arch(arch) == "depth"
    ident = ((config.get("source") or {}).get("license") or "").strip().lower()
    licence = {"license": ident}
    if ident not in HUB_LICENSES:
        licence = {"license": "other", "license_name": "source-weights-license"}
    return ModelCardData(
        **licence,
        library_name="dgiqa",
        tags=["dgiqa", "safetensors"] + (["depth-estimation"] if depth else ["image-quality-assessment", arch]),
        pipeline_tag="depth-estimation" if depth else None,
    )


def model_card(config: dict, repo: str) -> str:
    """README.md for a Hub repository in dgiqa's format: what, how good, from where, under which terms."""
    arch = config["architecture"]
    source = config.get("source") or {}
    conversion = config.get("conversion") or {}
    depth = kind_of_arch(arch) == "depth"
    name = repo.split("/", 1)[1]
    option = "--depth-weights" if depth else "--weights"
    options = config.get("model_config") or {}
    weights = config.get("weights_file", DEFAULT_HUB_FILE)
    rows = [
        ("architecture", f"`{arch}`" + (f" ({_options_text(options)})" if options else "")),
        ("trained on", config.get("trained_on") or "not stated"),
        ("score range", _range_text(config)),
    ]
    if arch == "dgiqa":
        depth_model = config.get("depth_model") or AUTHORS_DEPTH_MODEL
        rows.append(("depth model", f"Depth Anything V1 `{depth_model}` (used by default)"))
    if config.get("parameters"):
        rows.append(("parameters", f"{config['parameters']:,}"))
    rows.append(("weights", f"`{weights}` ({config.get('dtype', '-')}), sha256 `{config.get('sha256')}`"))

    lines = [
        "",
        f"# {name}",
        "",
        f"{config.get('description') or arch}.",
        "",
        f"Architecture: {_arch_text(arch)}. "
        + (
            f"Fine-tuned with `dgiqa finetune` from `{source.get('file', '?')}`"
            if config.get("training")
            else "Converted for `dgiqa`, a command line and Python tool for blind image quality; the tensors are "
            "the source checkpoint's, unchanged"
        )
        + ".",
        "",
        "| | |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in rows],
        "",
        "## Use",
        "",
        "With `dgiqa` installed:",
        "",
        "```bash",
    ]
    if depth:
        lines.append(f"dgiqa score photo.jpg --depth-model {arch.removeprefix('depth-anything-')} {option} hf://{repo}")
    elif arch == "dgiqa":
        lines.append(f"dgiqa score photo.jpg {option} hf://{repo}")
    else:
        lines.append(f"dgiqa weights info hf://{repo}   # Life-IQA weights; load with dgiqa_cli.models.build_model")
    lines += [
        "```",
        "",
        "dgiqa reads `config.json` first (architecture, depth model, score range), then `model.safetensors`, "
        "and checks the file's sha256 against `config.json` before loading.",
        "",
        "## Source and licence",
        "",
        f"Source file: `{source.get('file', '?')}`"
        + (f" (sha256 `{source['sha256']}`)" if source.get("sha256") else "")
        + (f", published at {source['url']}." if source.get("url") else "."),
        "",
        f"Licence of the source weights: {source.get('license') or 'not stated; ask the authors before reuse'}. "
        "The conversion changes the file format only, so these weights carry the same terms.",
        "",
        *(training_section(config["training"]) if config.get("training") else conversion_section(conversion)),
        "## Citation",
        "",
        config.get("citation") or "See the source repository.",
        "",
    ]
    front = card_data(config).to_yaml(original_order=_YAML_ORDER)
    return str(ModelCard(f"---\n{front}\n---\n" + "\n".join(lines)))


def conversion_section(conversion: dict) -> list[str]:
    return [
        "## How they were converted",
        "",
        f"With {conversion.get('tool', 'dgiqa')} (`dgiqa weights import`)"
        + (f" on {conversion['date']}" if conversion.get("date") else "")
        + ":",
        "",
        *[f"1. {step}" for step in conversion.get("steps", [])],
        "",
    ]


def training_section(training: dict) -> list[str]:
    """How fine-tuned weights were made (``dgiqa finetune``): data, split, settings, chosen epoch, metrics."""
    data, labels, settings = training.get("data", {}), training.get("labels", {}), training.get("settings", {})
    counts = data.get("counts", {})
    used = data.get("used", {})
    lines = [
        "## How they were trained",
        "",
        f"With `dgiqa finetune` from `{(training.get('init') or {}).get('spec', '?')}`"
        f" (sha256 `{(training.get('init') or {}).get('sha256')}`).",
        "",
        "| | |",
        "|---|---|",
        f"| training data | {data.get('name', '?')} (`{data.get('source', '')}`) |",
        f"| split | {counts.get('train', 0)} train, {counts.get('validation', 0)} validation, "
        f"{counts.get('test', 0)} test; {data.get('split_origin', '')}; sha256 `{data.get('split_sha256')}` |",
        f"| pictures used | {used.get('train', 0)} train, {used.get('validation', 0)} validation; "
        f"{len(data.get('skipped', []))} unreadable, skipped |",
        f"| labels | MOS {labels.get('mos_low')} to {labels.get('mos_high')}"
        f"{' (lower is better)' if labels.get('lower_is_better') else ''}; back to the data's scale: "
        f"`{labels.get('score_to_mos', '')}` |",
        f"| frozen | {', '.join(training.get('frozen') or []) or 'nothing'} |",
        f"| precision, device | {training.get('precision')}, {training.get('device')} |",
        f"| chosen epoch | {training.get('best_epoch')} of {training.get('epochs_run')} (best validation SRCC) |",
    ]
    for key, value in (training.get("validation") or {}).items():
        lines.append(f"| validation {key.removeprefix('val_')} | {_metric(value)} |")
    test = training.get("test")
    if test:
        for key, value in test.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                lines.append(f"| test {key} | {_metric(value)} |")
    else:
        lines.append("| test | none (the labels have no test split) |")
    lines += ["", "Settings: " + ", ".join(f"`{k}={v}`" for k, v in settings.items()), ""]
    return lines


def _metric(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _options_text(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items())
