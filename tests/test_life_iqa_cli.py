"""Life-IQA through the same commands: its own preprocessing, no depth stage, its score scale named."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision.transforms.functional as TF
from conftest import FIXTURES, PICTURES
from PIL import Image
from typer.testing import CliRunner

from dgiqa_cli.cli import app
from dgiqa_cli.inference.preprocess import IMAGENET_MEAN, IMAGENET_STD, crop_positions
from dgiqa_cli.models import build_model

runner = CliRunner()


def authors_flow_score(weights_path, image_path, crops: int) -> float:
    """Life-IQA's test transform with torchvision (Resize((512, 384)) on the PIL image, 224 crops,
    ToTensor, Normalize), at our seeded crop positions, through the bare module."""
    net = build_model("life-iqa")
    net.load_state_dict(torch.load(weights_path, weights_only=True))
    picture = TF.resize(Image.open(image_path).convert("RGB"), [512, 384])
    batch = []
    for x, y in crop_positions(512, 384, crops):
        crop = TF.to_tensor(TF.crop(picture, y, x, 224, 224))
        batch.append(TF.normalize(crop, IMAGENET_MEAN, IMAGENET_STD))
    with torch.inference_mode():
        return net(torch.stack(batch)).mean().item()


@pytest.mark.slow
def test_score_command_runs_life_iqa_end_to_end(life_iqa_file):
    paths = [str(FIXTURES / name) for name in PICTURES]
    result = runner.invoke(
        app,
        [
            "score",
            *paths,
            "--model",
            "life-iqa",
            "--weights",
            str(life_iqa_file),
            "--crops",
            "2",
            "--device",
            "cpu",
            "--json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    for path, row in zip(paths, rows, strict=True):
        assert row["arch"] == "life-iqa" and row["depth_model"] is None
        assert row["scale"] == "MOS, unbounded" and row["score_range"] == [None, None]
        assert row["score"] == pytest.approx(authors_flow_score(life_iqa_file, path, crops=2), abs=1e-4)


def test_family_and_weights_must_agree(life_iqa_file, weights_dir):
    result = runner.invoke(
        app,
        ["score", str(FIXTURES / PICTURES[0]), "--model", "dgiqa", "--weights", str(life_iqa_file), "--device", "cpu"],
    )
    assert result.exit_code == 3
    assert "holds life-iqa weights, not dgiqa weights" in " ".join(result.stderr.split())
    result = runner.invoke(
        app,
        [
            "score",
            str(FIXTURES / PICTURES[0]),
            "--weights",
            str(life_iqa_file),
            "--depth-model",
            "vits",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 2
    assert "Life-IQA has no depth stage" in " ".join(result.stderr.split())


@pytest.mark.slow
def test_batch_with_life_iqa_matches_score(tmp_path, small_life_iqa):
    from dgiqa_cli import Scorer
    from dgiqa_cli.inference.engine import BatchRunner

    scorer = Scorer(small_life_iqa, model="life-iqa", crops=2, device="cpu")
    paths = [str(FIXTURES / name) for name in PICTURES]
    rows = []
    BatchRunner(scorer, batch_size=2, workers=2).run(paths, rows.append)
    for row in rows:
        assert row.arch == "life-iqa"
        assert row.score == pytest.approx(scorer.score(row.path).score, abs=1e-5)
