"""``dgiqa finetune`` on a tiny generated data set whose quality is known: pictures blurred and noised at
graded levels, rated 5 (pristine) down to 2. Real DGIQA (stand-in weights) and the ViT-S stand-in depth model,
on the CPU; each run is a few optimiser steps, so the whole file costs about two minutes."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import FIXTURES, run_interrupted
from safetensors.torch import load_file
from scipy import stats
from typer.testing import CliRunner

from dgiqa_cli.cli import app
from dgiqa_cli.training.checkpoint import load_checkpoint, restore_rng_states, rng_states
from dgiqa_cli.training.data import DepthCache, LabelScale, epoch_plan
from dgiqa_cli.training.loop import lr_factor
from dgiqa_cli.training.losses import make_loss, parse_loss
from dgiqa_cli.training.splits import load_split, make_split

runner = CliRunner()
LEVELS = 4  # quality levels per reference picture: MOS 5, 4, 3, 2


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def degraded_set(folder: Path, split_of) -> Path:
    """Three reference pictures (~300x400) x 4 levels of blur + noise, MOS = 5 - level; and a broken PNG.

    ``split_of(group, level)`` gives each picture's split. Returns the labels file.
    """
    folder.mkdir(parents=True, exist_ok=True)
    a = cv2.imread(str(FIXTURES / "synthetic_480x640.png"))
    b = cv2.imread(str(FIXTURES / "synthetic_600x400.png"))
    references = {"a": a, "b": b, "c": cv2.flip(a, -1)}
    rng = np.random.default_rng(0)
    rows = ["path,mos,split,group"]
    for group, picture in references.items():
        size = (400, 300) if picture.shape[1] > picture.shape[0] else (300, 400)
        picture = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
        for level in range(LEVELS):
            x = cv2.GaussianBlur(picture, (0, 0), 1.5 * level) if level else picture
            x = np.clip(x + rng.normal(0, 6 * level, x.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"{group}{level}.png"), x)
            rows.append(f"{group}{level}.png,{5 - level},{split_of(group, level)},{group}")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a PNG header, then nothing usable
    rows.append(f"broken.png,3,{split_of('a', 0)},a")
    labels = folder / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return labels


def depth_args(standin_weights):
    return ["--depth-model", "vits", "--depth-weights", standin_weights["depth"], "--device", "cpu"]


# -- the pieces, without the model ---------------------------------------------------------------------------


def test_losses_and_their_sums():
    pred, target = torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0.0, 0.5, 1.0])
    assert make_loss("plcc")(pred, target).item() == pytest.approx(0.0, abs=1e-6)
    assert make_loss("plcc")(-pred, target).item() == pytest.approx(1.0, abs=1e-6)
    assert make_loss("rank")(pred, target).item() == pytest.approx((0.1 + 0.1 + 0.2) / 3)
    assert make_loss("rank")(pred.flip(0), target).item() > 0.5
    both = make_loss("mse+plcc")(pred, target).item()
    assert both == pytest.approx(make_loss("mse")(pred, target).item(), abs=1e-6)
    for bad in ("huber", "mse+mse", ""):
        with pytest.raises(ValueError, match="loss"):
            parse_loss(bad)


def test_schedule_warms_up_then_decays_to_zero():
    factors = [lr_factor(step, 100, 10) for step in range(100)]
    assert factors[0] < factors[5] < factors[9] < factors[10] == 1.0
    assert all(x >= y for x, y in zip(factors[10:], factors[11:], strict=False))
    assert factors[-1] < 0.001


def test_validation_split_by_group_is_fixed_and_hashed(tmp_path):
    from dgiqa_cli.evaluation.labels import load_labels

    labels = degraded_set(tmp_path, lambda group, level: "train")
    images = load_labels(labels).images
    split = make_split(images, 0.3, seed=1)
    group = {image.path: image.group for image in images}
    held = {group[p] for p in split.paths("validation")}
    assert len(held) == 1 and {group[p] for p in split.paths("train")}.isdisjoint(held)  # whole groups
    assert make_split(images, 0.3, seed=1).sha256 == split.sha256  # same seed, same split
    split.save(tmp_path)
    assert load_split(tmp_path, split.sha256).assignment == split.assignment
    (tmp_path / "split.csv").write_text((tmp_path / "split.csv").read_text().replace("validation", "train"))
    with pytest.raises(ValueError, match="changed"):
        load_split(tmp_path, split.sha256)


def test_labels_map_to_the_model_range_and_back():
    dmos = LabelScale(1.0, 5.0, lower_is_better=True, bounded=True)
    assert dmos.to_target(1.0) == 1.0 and dmos.to_target(5.0) == 0.0
    assert dmos.to_mos(dmos.to_target(2.5)) == pytest.approx(2.5)
    mos = LabelScale(0.0, 100.0, lower_is_better=False, bounded=False)  # Life-IQA keeps the MOS scale
    assert mos.to_target(70.0) == 70.0 == mos.to_mos(70.0)


def test_crop_plan_depends_on_seed_and_epoch_only():
    from dgiqa_cli.training.data import Sample

    samples = [Sample(f"{i}.png", "0" * 64, 3.0, 0.5, None, (384, 512)) for i in range(5)]
    first = epoch_plan(samples, seed=3, epoch=1, flip=True)
    assert first == epoch_plan(samples, seed=3, epoch=1, flip=True)
    assert first != epoch_plan(samples, seed=3, epoch=2, flip=True)
    assert sorted(c.index for c in first) == list(range(5))
    assert all(0 <= c.x <= 512 - 224 and 0 <= c.y <= 384 - 224 for c in first)


def test_depth_cache_and_rng_states_round_trip(tmp_path):
    cache = DepthCache(tmp_path, "d" * 64)
    assert cache.get("a" * 64) is None
    cache.put("a" * 64, np.arange(12, dtype=np.uint8).reshape(3, 4))
    assert cache.get("a" * 64).tolist() == np.arange(12).reshape(3, 4).tolist()
    assert DepthCache(tmp_path, "e" * 64).get("a" * 64) is None  # other depth weights: another key
    states = rng_states()
    first = (torch.rand(3), np.random.rand(), __import__("random").random())
    restore_rng_states(states)
    again = (torch.rand(3), np.random.rand(), __import__("random").random())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]


# -- whole runs ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, standin_weights):
    """One run: 4 training pictures (and a broken one), 2 for validation, 2 for test; backbones frozen."""

    def split_of(group, level):
        if group == "b":
            return "validation" if level % 2 else "test"
        return "train" if group == "a" else "unused"

    folder = tmp_path_factory.mktemp("finetune")
    labels = degraded_set(folder / "data", split_of)
    out = folder / "model"
    began = time.perf_counter()
    result = invoke(
        "finetune",
        "--labels",
        labels,
        "--out",
        out,
        "--init",
        standin_weights["model"],
        *depth_args(standin_weights),
        "--freeze",
        "backbones",
        "--epochs",
        3,
        "--batch-size",
        4,
        "--lr",
        5e-3,
        "--warmup",
        0,
        "--val-crops",
        1,
        "--eval-crops",
        2,
        "--json",
    )
    return {"result": result, "out": out, "labels": labels, "seconds": time.perf_counter() - began}


def test_a_broken_picture_is_reported_and_skipped_never_replaced(trained):
    result = trained["result"]
    assert result.exit_code == 1, result.output  # some inputs failed: each is named
    assert "broken.png" in result.stderr and "skipped" in result.stderr
    training = json.loads((trained["out"] / "config.json").read_text())["training"]
    assert [Path(s["path"]).name for s in training["data"]["skipped"]] == ["broken.png"]
    assert training["data"]["used"] == {"train": 4, "validation": 2}


def test_training_lowers_the_loss_and_raises_the_training_srcc(trained, standin_weights):
    summary = json.loads(trained["result"].stdout)
    assert all(np.isfinite(row["train_loss"]) for row in summary["epochs"])
    # The training pictures scored as `dgiqa score` scores them (eval mode, fixed crops), before and after:
    # their loss (MSE to the labels mapped onto [0, 1]) falls and their SRCC rises.
    pictures = sorted(trained["labels"].parent.glob("a?.png"))
    mos = np.array([5 - int(p.stem[1]) for p in pictures], dtype=float)
    target = (mos - mos.min()) / (mos.max() - mos.min())

    def scores(weights):
        done = invoke("score", *pictures, "--weights", weights, *depth_args(standin_weights), "--crops", 2, "--json")
        assert done.exit_code == 0, done.output
        return np.array([row["score"] for row in json.loads(done.stdout)])

    before, after = scores(standin_weights["model"]), scores(trained["out"])
    loss_before, loss_after = np.mean((before - target) ** 2), np.mean((after - target) ** 2)
    srcc_before, srcc_after = stats.spearmanr(before, mos).statistic, stats.spearmanr(after, mos).statistic
    print(f"training pictures: MSE {loss_before:.4f} -> {loss_after:.4f}, SRCC {srcc_before:.3f} -> {srcc_after:.3f}")
    assert loss_after < loss_before
    assert srcc_after > srcc_before or srcc_after == 1.0


def test_the_output_is_a_hub_format_folder_with_card_log_and_curves(trained):
    from dgiqa_cli.weights.push import plan_push

    out = trained["out"]
    config = json.loads((out / "config.json").read_text())
    training = config["training"]
    assert config["architecture"] == "dgiqa" and config["depth_model"] == "vits"
    assert training["labels"]["score_to_mos"] == "mos = low + score * (high - low)"
    assert training["data"]["split_sha256"] and training["best_epoch"] in (1, 2, 3)
    # the test split, scored once at the end by eval's code
    assert training["test"]["n"] == 2 and training["test"]["split"] == "test"
    card = (out / "README.md").read_text()
    assert "How they were trained" in card and training["data"]["split_sha256"] in card
    assert "## How they were trained" in plan_push(str(out), "someone/finetuned").card  # push works as it is
    log = (out / "training_log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,lr,train_loss") and len(log) == 4
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_after_a_kill_gives_the_uninterrupted_weights(tmp_path, standin_weights):
    labels = degraded_set(tmp_path / "data", lambda group, level: {"a": "train", "b": "validation"}.get(group, "x"))
    frozen = "backbones,tcb1,tcb2,tcb3,tcb4,tcb1_depth,tcb2_depth,tcb3_depth,tcb4_depth,depth_guided_cross_attention"
    common = [
        "finetune",
        "--labels",
        labels,
        "--init",
        standin_weights["model"],
        *depth_args(standin_weights),
        "--freeze",
        frozen.replace("backbones", "backbone,depth_backbone"),
        "--epochs",
        2,
        "--batch-size",
        2,
        "--lr",
        1e-4,
        "--val-crops",
        1,
        "--quiet",
    ]
    whole = invoke(*common, "--out", tmp_path / "whole")
    assert whole.exit_code == 1, whole.output  # the broken picture

    killed = tmp_path / "killed"
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    # Killed as the first epoch's checkpoint lands, i.e. before the second epoch finishes.
    done = run_interrupted(["dgiqa", *common, "--out", killed], "checkpoint", 1, "SIGKILL", env=env)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert load_checkpoint(killed)["epoch"] == 1  # killed during the second epoch

    resumed = invoke(*common, "--out", killed, "--resume")
    assert resumed.exit_code == 1, resumed.output
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "whole" / "training_log.csv").read_text().count("\n") == 3


def test_usage_errors(tmp_path, standin_weights):
    labels = degraded_set(tmp_path / "data", lambda group, level: "train")
    args = ["finetune", "--labels", labels, "--init", standin_weights["model"], *depth_args(standin_weights)]
    for extra, message in (
        (["--loss", "huber"], "unknown loss"),
        (["--freeze", "nothing_here"], "no module"),
        (["--resume"], "no checkpoint"),
    ):
        done = invoke(*args, "--out", tmp_path / "out", *extra)
        assert done.exit_code == 2 and message in done.stderr, done.output
    assert invoke("finetune", "--out", tmp_path / "o").exit_code == 2  # no ratings given


def test_imagenet_init_puts_timm_backbone_weights_into_both_backbones(tmp_path, standin_weights):
    import timm
    from safetensors.torch import save_file

    from dgiqa_cli.training.network import load_initial

    generator = torch.Generator().manual_seed(1)  # stand-in ImageNet weights: the real ones are a download
    state = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).state_dict()
    state = {k: torch.randn(v.shape, generator=generator) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, tmp_path / "swin_t.safetensors")
    initial = load_initial(
        "imagenet",
        backbone_weights=str(tmp_path / "swin_t.safetensors"),
        depth_model="vits",
        depth_weights=str(standin_weights["depth"]),
    )
    assert initial.arch == "dgiqa" and initial.sha256 is None and initial.depth_model == "vits"
    for backbone in (initial.network.backbone, initial.network.depth_backbone):
        assert torch.equal(backbone.state_dict()["patch_embed.proj.weight"], state["patch_embed.proj.weight"])


@pytest.mark.slow
def test_life_iqa_trains_from_its_own_weights_and_scores_from_the_folder(tmp_path, small_life_iqa):
    """Life-IQA: no depth stage, its own 512x384 frame; the folder it writes scores as Life-IQA weights."""
    import tiny_sets

    splits = ["train"] * 5 + ["validation", "validation", "test", "test"]
    labels = tiny_sets.labels_csv(tmp_path / "ratings.csv", levels=tuple(range(9)), extra_columns={"split": splits})
    out = tmp_path / "life-ft"
    args = ["--init", small_life_iqa, "--out", out, "--epochs", "1", "--batch-size", "2", "--freeze", "backbones"]
    result = invoke("finetune", "--labels", labels, *args, "--device", "cpu", "--eval-crops", "1", "--val-crops", "1")
    assert result.exit_code == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "life-iqa" and config["depth_model"] is None
    from dgiqa_cli.models.life_iqa import fill_twin_keys

    saved, authors = (
        load_file(out / "model.safetensors"),
        fill_twin_keys(load_file(small_life_iqa / "model.safetensors")),
    )
    assert set(saved) <= set(authors)  # the authors' twin copies of the backbone are stored once
    assert all(saved[key].shape == authors[key].shape for key in saved)
    scored = invoke(
        "score", tmp_path / "pics" / "p0.png", "--weights", out, "--device", "cpu", "--crops", "1", "--json"
    )
    assert scored.exit_code == 0, scored.stderr
    (row,) = json.loads(scored.stdout)
    assert row["arch"] == "life-iqa" and row["score"] is not None
