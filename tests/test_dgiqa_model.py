"""DGIQA network: the authors' checkpoint layout, and their forward pass to float tolerance."""

from __future__ import annotations

import pytest
import torch
from conftest import load_json

from dgiqa_cli.models import build_model
from dgiqa_cli.models.seeded_weights import manifest_of
from dgiqa_cli.weights import WeightsError
from dgiqa_cli.weights.files import ResolvedWeights, load_into


@pytest.fixture(scope="module")
def model(golden):
    from dgiqa_cli.models.seeded_weights import seeded_state

    net = build_model("dgiqa")
    net.load_state_dict(
        seeded_state(load_json("manifest_dgiqa.json")["tensors"], golden["dgiqa_forward"]["weights_seed"])
    )
    return net


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(7)
    rgb = torch.randn(2, 3, 224, 224, generator=g)
    depth = torch.randn(2, 3, 224, 224, generator=g)
    return rgb, depth


def test_state_dict_equals_released_checkpoint_layout():
    assert manifest_of(build_model("dgiqa").state_dict()) == load_json("manifest_dgiqa.json")["tensors"]


def test_forward_and_intermediates_match_golden(model, inputs, golden):
    expected = golden["dgiqa_forward"]
    captured = {}
    hooks = [
        getattr(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: captured.__setitem__(name, out[0] if isinstance(out, tuple) else out)
        )
        for name in expected["intermediate_outputs_NCHW"]
    ]
    try:
        with torch.inference_mode():
            scores = model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    torch.testing.assert_close(scores, torch.tensor(expected["output"]), rtol=0, atol=expected["atol"])
    for name, stats in expected["intermediate_outputs_NCHW"].items():
        out = captured[name]
        if out.dim() == 3:  # the attention blocks emit tokens (49, N, C); golden stores them as (N, C, 7, 7)
            out = out.permute(1, 2, 0).reshape(stats["shape"])
        assert list(out.shape) == stats["shape"], name
        assert out.mean().item() == pytest.approx(stats["mean"], abs=1e-5), name
        assert out.std().item() == pytest.approx(stats["std"], abs=1e-5), name
        torch.testing.assert_close(out.flatten()[:8], torch.tensor(stats["first8"]), rtol=0, atol=1e-5)


def test_attention_weights_are_distributions_and_leave_scores_unchanged(model, inputs):
    with torch.inference_mode():
        plain = model(*inputs)
        scores, attention = model(*inputs, return_attention=True)
    torch.testing.assert_close(scores, plain, rtol=0, atol=1e-6)
    for weights in attention.values():
        assert weights.shape == (2, 49, 49)
        assert (weights >= 0).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 49))


def test_older_timm_buffers_are_tolerated(tmp_path, dgiqa_state, model, inputs):
    """Checkpoints saved with timm < 0.9 carry relative_position_index and attn_mask buffers."""
    old = dict(dgiqa_state)
    old["backbone.layers_0.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    old["depth_backbone.layers_0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    torch.save(old, tmp_path / "old.pth")
    fresh = load_into(build_model("dgiqa"), "dgiqa", ResolvedWeights(tmp_path / "old.pth", "old.pth"))
    with torch.inference_mode():
        torch.testing.assert_close(fresh(*inputs), model(*inputs))


def test_foreign_keys_are_a_clear_error(tmp_path, dgiqa_state):
    broken = dict(dgiqa_state)
    del broken["fc.bias"]
    broken["head.weight"] = torch.zeros(3)
    broken["tcb1.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(WeightsError) as info:
        load_into(build_model("dgiqa"), "dgiqa", ResolvedWeights(tmp_path / "broken.pth", "broken.pth"))
    message = str(info.value)
    assert "broken.pth" in message and "do not fit the dgiqa architecture" in message
    assert "1 missing (e.g. fc.bias)" in message
    assert "1 unexpected (e.g. head.weight)" in message
    assert "1 wrong shape (e.g. tcb1.conv1.weight (1, 1, 1, 1) (model: (64, 96, 1, 1)))" in message
