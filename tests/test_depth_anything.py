"""Depth Anything V1: checkpoint layout for every encoder, and fidelity to the authors' code (ViT-S)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dgiqa_cli.models.depth_anything import DEPTH_CONFIGS, DepthAnything
from dgiqa_cli.models.seeded_weights import manifest_of, seeded_state

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN_KEY = "depth_anything_vits14_forward"
ATOL = 1e-5  # for pooled depths near zero, where a relative tolerance alone is meaningless


def _manifest(encoder: str) -> dict:
    return json.loads((FIXTURES / f"manifest_depth_anything_{encoder}14.json").read_text())


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((FIXTURES / "golden.json").read_text())[GOLDEN_KEY]


@pytest.fixture(scope="module")
def vits_model(golden) -> DepthAnything:
    """ViT-S on the stand-in weights the golden numbers were computed with."""
    manifest = _manifest("vits")
    model = DepthAnything("vits").eval()
    model.load_state_dict(seeded_state(manifest["tensors"], seed=golden["weights_seed"]), strict=True)
    return model


@pytest.mark.parametrize("encoder", ["vits", "vitb", "vitl"])
def test_state_dict_matches_checkpoint_manifest(encoder):
    """Keys, shapes, dtypes and order equal the released checkpoint's, so strict loading works unchanged."""
    manifest = _manifest(encoder)
    with torch.device("meta"):  # layout only: no memory or init time for ViT-L's 335M parameters
        model = DepthAnything(encoder)
    assert manifest_of(model.state_dict()) == manifest["tensors"]
    config = DEPTH_CONFIGS[encoder]
    assert config["features"] == manifest["config"]["features"]
    assert config["out_channels"] == manifest["config"]["out_channels"]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["518x518", "518x686"])
def test_forward_matches_golden(vits_model, golden, case):
    """Square input (position embedding used as is) and non-square (bicubic resize by scale factor)."""
    expected = golden["cases"][case]
    height, width = map(int, case.split("x"))
    x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(11))
    with torch.inference_mode():
        depth = vits_model(x)
    assert depth.shape == (1, height, width)
    depth = depth[0]
    rtol = golden["rtol"]
    assert depth.mean().item() == pytest.approx(expected["mean"], rel=rtol)
    assert depth.std().item() == pytest.approx(expected["std"], rel=rtol)
    assert depth.max().item() == pytest.approx(expected["max"], rel=rtol)
    pooled = F.interpolate(depth[None, None], size=(height // 14, width // 14), mode="area")[0, 0]
    torch.testing.assert_close(
        pooled, torch.tensor(expected["area_pooled_14"]), rtol=rtol, atol=ATOL, check_dtype=False
    )


def test_forward_is_deterministic_and_batch_independent(vits_model):
    """Eval mode gives identical maps on repeat, and each image's map does not depend on its batch mates."""
    x = torch.randn(2, 3, 70, 98, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        first = vits_model(x)
        second = vits_model(x)
        alone = vits_model(x[1:])
    assert first.shape == (2, 70, 98)
    assert torch.equal(first, second)
    torch.testing.assert_close(first[1:], alone, rtol=1e-4, atol=ATOL)
    assert (first >= 0).all()  # final ReLU: inverse depth is non-negative


def test_position_embedding_grid(vits_model):
    """The 37 x 37 grid is used untouched; other grids get exactly h * w positions plus the class token."""
    encoder = vits_model.pretrained
    with torch.inference_mode():
        assert encoder.interpolate_pos_embed(37, 37) is encoder.pos_embed
        resized = encoder.interpolate_pos_embed(5, 7)
    assert resized.shape == (1, 1 + 5 * 7, 384)
    torch.testing.assert_close(resized[:, 0], encoder.pos_embed[:, 0])


def test_rejects_bad_input_and_encoder(vits_model):
    with pytest.raises(ValueError, match="multiple of 14"):
        vits_model(torch.zeros(1, 3, 70, 100))
    with pytest.raises(ValueError, match="unknown encoder"):
        DepthAnything("vitg")
