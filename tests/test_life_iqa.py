"""Life-IQA: checkpoint layout, fidelity to the authors' code on seeded weights, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dgiqa_cli.models.life_iqa import (
    LIFE_IQA_KONIQ_CONFIG,
    LifeIQA,
    fill_twin_keys,
    grid_average,
    normalized_full_adjacency,
    twin_key,
)
from dgiqa_cli.models.seeded_weights import manifest_of, seeded_state

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((FIXTURES / "manifest_life_iqa.json").read_text())


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((FIXTURES / "golden.json").read_text())["life_iqa_forward"]


@pytest.fixture(scope="module")
def model(manifest, golden) -> LifeIQA:
    """Life-IQA (KonIQ config) on the golden recipe's weights: seeded, then backbone twins made equal."""
    state = seeded_state(manifest["tensors"], seed=golden["weights_seed"])
    for key in state:
        if key.startswith("backbone_stages."):
            state[key] = state[twin_key(key)]
    net = LifeIQA(**LIFE_IQA_KONIQ_CONFIG).eval()
    net.load_state_dict(state, strict=True)
    return net


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(13))


@pytest.fixture(scope="module")
def single_scores(model, inputs) -> torch.Tensor:
    with torch.inference_mode():
        return model(inputs[:1])


def test_config_matches_manifest(manifest):
    config = manifest["config"]
    assert LIFE_IQA_KONIQ_CONFIG["embed_dim"] == config["embed_dim"]
    assert LIFE_IQA_KONIQ_CONFIG["num_queries"] == config["juery_nums"]
    for name in ("num_experts", "top_k", "depth"):
        assert LIFE_IQA_KONIQ_CONFIG[name] == config[name]


@pytest.mark.slow
def test_state_dict_keys_shapes_and_order_match_manifest(model, manifest):
    assert manifest_of(model.state_dict()) == manifest["tensors"]


@pytest.mark.slow
def test_backbone_twins_share_storage(model):
    state = model.state_dict()
    assert (
        state["backbone_stages.0.0.proj.weight"].data_ptr()
        == state["pretrain_model.patch_embed.proj.weight"].data_ptr()
    )
    assert (
        state["backbone_stages.3.blocks.1.mlp.fc2.bias"].data_ptr()
        == state["pretrain_model.layers.3.blocks.1.mlp.fc2.bias"].data_ptr()
    )


@pytest.mark.slow
def test_forward_matches_golden(model, inputs, golden):
    with torch.inference_mode():
        scores = model(inputs)
    assert scores.shape == (2,)
    expected = torch.tensor(golden["output"])
    assert torch.allclose(scores, expected, rtol=0, atol=golden["atol"]), (scores.tolist(), golden["output"])


@pytest.mark.slow
def test_eval_forward_is_deterministic(model, inputs, single_scores):
    with torch.inference_mode():
        again = model(inputs[:1])
    assert torch.equal(again, single_scores)


@pytest.mark.slow
def test_attention_maps_leave_scores_unchanged(model, inputs, single_scores):
    with torch.inference_mode():
        scores, attention = model(inputs[:1], return_attention=True)
    assert torch.allclose(scores, single_scores, rtol=0, atol=1e-6)
    assert attention.shape == (1, 6, 49)
    assert torch.allclose(attention.sum(-1), torch.ones(1, 6), atol=1e-5)


@pytest.mark.slow
def test_fill_twin_keys_restores_a_deduplicated_checkpoint(model):
    full = model.state_dict()
    deduplicated = {k: v for k, v in full.items() if not k.startswith("backbone_stages.")}
    filled = fill_twin_keys(deduplicated)
    assert set(filled) == set(full)
    assert all(filled[k] is deduplicated[twin_key(k)] for k in full if k.startswith("backbone_stages."))


def test_twin_key_mapping():
    pairs = {
        "pretrain_model.patch_embed.proj.weight": "backbone_stages.0.0.proj.weight",
        "pretrain_model.layers.0.blocks.1.norm1.bias": "backbone_stages.0.1.blocks.1.norm1.bias",
        "pretrain_model.layers.2.downsample.norm.bias": "backbone_stages.2.downsample.norm.bias",
    }
    for left, right in pairs.items():
        assert twin_key(left) == right
        assert twin_key(right) == left
    assert twin_key("proj_layer3.weight") is None


def test_adjacency_is_symmetric_normalized_complete_graph():
    adjacency = normalized_full_adjacency(6)
    expected = (torch.ones(6, 6) + torch.eye(6)) / 7  # every node has degree 7 once self-loops are added
    assert torch.allclose(adjacency, expected)


def test_grid_average_bins():
    features = torch.randn(2, 14, 14, 5)
    pooled = torch.nn.functional.avg_pool2d(features.permute(0, 3, 1, 2), 2).flatten(2).transpose(1, 2)
    assert torch.allclose(grid_average(features, 7), pooled, atol=1e-6)
    # 10 does not divide into 7: integer linspace edges 0,1,2,4,5,7,8,10 (bins of 1 or 2, no overlap)
    uneven = torch.arange(10.0).view(1, 10, 1, 1).expand(1, 10, 10, 1)
    rows = grid_average(uneven, 7)[0, ::7, 0]
    assert rows.tolist() == [0.0, 1.0, 2.5, 4.0, 5.5, 7.0, 8.5]


@pytest.mark.slow
def test_other_configurations_build_and_run():
    """Smaller settings of the authors' knobs (queries, experts, top-k, depth, backbone) stay consistent."""
    torch.manual_seed(0)
    sparse = LifeIQA(
        embed_dim=96, num_queries=4, num_experts=3, top_k=1, depth=1, backbone="swin_tiny_patch4_window7_224"
    ).eval()
    with torch.inference_mode():
        scores, attention = sparse(torch.randn(1, 3, 224, 224), return_attention=True)
    assert scores.shape == (1,) and attention.shape == (1, 4, 49)
    assert torch.isfinite(scores).all()
    single = LifeIQA(embed_dim=96, num_queries=4, num_experts=1, depth=1, backbone="swin_tiny_patch4_window7_224")
    assert "MOE.net.0.weight" in single.state_dict() and "MOE.router.linear.weight" not in single.state_dict()
