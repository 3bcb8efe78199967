"""The small stand-in configurations: the same architectures in miniature, loaded through the normal path.

Plumbing tests score with these (tests/conftest.py); golden and fidelity tests keep the authors' sizes.
"""

from __future__ import annotations

import pytest
import torch

from dgiqa_cli.models import build_model
from dgiqa_cli.models.seeded_weights import SMALL_CONFIGS, small_state
from dgiqa_cli.weights import load_network


def test_small_networks_keep_the_interfaces_of_the_real_ones():
    torch.manual_seed(0)
    crops = torch.randn(2, 3, 224, 224)
    dgiqa = build_model("dgiqa", **SMALL_CONFIGS["dgiqa"])
    scores, attention = dgiqa(crops, crops, return_attention=True)
    assert scores.shape == (2,) and bool(((scores > 0) & (scores < 1)).all())
    assert attention["cross"].shape == attention["refine"].shape == (2, 49, 49)  # the 7 x 7 token grid
    depth = build_model("depth-anything-vits", **SMALL_CONFIGS["depth-anything-vits"])
    assert depth(torch.randn(1, 3, 518, 686)).shape == (1, 518, 686)
    life = build_model("life-iqa", **SMALL_CONFIGS["life-iqa"])
    life_scores, life_attention = life(crops, return_attention=True)
    assert life_scores.shape == (2,) and life_attention.shape == (2, 6, 49)
    # A hundredth of the parameters or less: what makes every load and inference near free.
    for arch, small in (("dgiqa", dgiqa), ("depth-anything-vits", depth), ("life-iqa", life)):
        real = sum(p.numel() for p in build_model(arch).parameters())
        assert sum(p.numel() for p in small.parameters()) * 50 < real, arch


def test_depth_anything_refuses_an_option_it_does_not_know():
    with pytest.raises(ValueError, match="unknown Depth Anything options \\['embed'\\]"):
        build_model("depth-anything-vits", embed=48)


def test_a_hub_folder_with_a_small_config_loads_the_small_network(small_weights):
    """config.json's model_config reaches build_model: the loaded tensors are the seeded ones, bit for bit."""
    loaded = load_network(small_weights["depth"], "depth", arch="depth-anything-vits")
    assert loaded.card.config["model"] == SMALL_CONFIGS["depth-anything-vits"]
    state = loaded.network.state_dict()
    from conftest import load_json

    expected = small_state("depth-anything-vits", load_json("golden.json")["pipeline"]["depth_weights_seed"])
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[key], expected[key]) for key in expected)
