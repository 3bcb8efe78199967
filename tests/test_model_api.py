"""The public API: ``create_model`` (one door to a scoring model), the root error, and no side effects.

The model's ``model(x)`` must give exactly what ``Scorer.score`` gives on the same pixels: the scorer is
built through the same door, so any difference would be a second code path.
"""

from __future__ import annotations

import warnings
from importlib.resources import files

import numpy as np
import pytest
import torch

import dgiqa_cli
from dgiqa_cli import DGIQAError, ImageError, WeightsError, create_model, list_weights
from dgiqa_cli.errors import EXIT_USAGE, UsageError
from dgiqa_cli.inference.runtime import inference_context
from dgiqa_cli.models import SPECS, spec_for
from tests.conftest import FIXTURES, PICTURES

PUBLIC = {
    "create_model",
    "Scorer",
    "ScoreResult",
    "load_image",
    "list_weights",
    "list_models",
    "DGIQAError",
    "WeightsError",
    "ImageError",
    "__version__",
}


def test_the_public_names_import_from_the_package():
    assert set(dgiqa_cli.__all__) >= PUBLIC
    for name in PUBLIC:
        assert getattr(dgiqa_cli, name) is not None
    assert files("dgiqa_cli").joinpath("py.typed").is_file()  # PEP 561 marker ships with the package


def test_list_models_is_a_deprecated_alias_of_list_weights():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = dgiqa_cli.list_models()
    assert names == list_weights() == ["dgiqa-koniq", "dgiqa-kadid", "life-iqa-koniq"]
    assert [w.category for w in caught] == [DeprecationWarning]
    assert list_weights("depth") == ["vits", "vitb", "vitl"]


def test_every_dgiqa_error_has_one_root_and_an_exit_code():
    assert issubclass(WeightsError, DGIQAError) and issubclass(ImageError, DGIQAError)
    with pytest.raises(DGIQAError) as raised:
        create_model(crops=0)  # refused before anything loads
    assert isinstance(raised.value, UsageError) and raised.value.exit_code == EXIT_USAGE
    assert "--" not in str(raised.value)  # a library message names no command-line flag
    with pytest.raises(UsageError, match="unknown model family 'brisque'"):
        create_model(family="brisque")


def test_the_family_facts_live_in_one_spec_each():
    assert set(SPECS) == {"dgiqa", "life-iqa"}
    dgiqa, life = spec_for("dgiqa"), spec_for("life-iqa")
    assert dgiqa.needs_depth and not life.needs_depth
    assert dgiqa.input_size is None and life.input_size == (512, 384)
    assert dgiqa.score_range == (0.0, 1.0) and life.score_range == (None, None)
    assert set(dgiqa.attention) == {"cross", "refine"} and set(life.attention) == {"cross"}
    from dgiqa_cli.explain.families import FAMILIES

    assert {name: family.spec for name, family in FAMILIES.items()} == dict(SPECS)


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    """Two same-sized (N, H, W, 3) uint8 pictures cut from the fixture pictures."""
    from dgiqa_cli import load_image

    return np.stack([load_image(FIXTURES / name)[:360, :400] for name in PICTURES])


def test_model_of_a_float_batch_equals_scorer_score_on_the_same_pixels(scorer, batch):
    model = scorer.iqa_model
    assert model.lower_better is False and model.score_range == (0.0, 1.0) and model.spec is SPECS["dgiqa"]
    as_float = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255  # what ToTensor gives
    scores = model(as_float)
    assert scores.shape == (2,) and scores.dtype == torch.float32
    expected = [scorer.score(picture).score for picture in batch]
    # The same pixels through the same steps; only the batch differs (two pictures' crops in one forward pass
    # instead of one picture's), which changes the matrix kernels' blocking: float32 rounding, not a new path.
    assert scores.tolist() == pytest.approx(expected, abs=1e-6, rel=0)
    assert model(batch).tolist() == scores.tolist()  # uint8 (N, H, W, 3) arrays: exactly the floats' pixels
    assert scores[0] != scores[1]  # two pictures, two scores: the batch is not one picture repeated


def test_model_refuses_what_is_not_a_batch(scorer, batch):
    with pytest.raises(UsageError, match="scores a batch"):
        scorer.iqa_model(torch.zeros(3, 64, 64))
    with pytest.raises(ImageError, match=r"values in \[0, 1\]"):
        scorer.iqa_model(torch.full((1, 3, 300, 300), 2.0))


def test_create_model_builds_what_the_scorer_builds(scorer, standin_weights, batch):
    model = create_model(
        standin_weights["model"],
        depth_model="vits",
        depth_weights=standin_weights["depth"],
        crops=1,
        device="cpu",
        backend="torch",
    )
    assert model.settings == scorer.settings
    assert model(batch).tolist() == scorer.iqa_model(batch).tolist()
    assert str(standin_weights["model"]) in repr(model) and "crops=1" in repr(model)


def test_strict_scoring_raises_where_the_default_returns_a_row(scorer):
    row = scorer.score(b"not a picture")
    assert row.score is None and row.error
    with pytest.raises(ImageError) as raised:
        scorer.score(b"not a picture", strict=True)
    assert raised.value.reason == row.error


def _torch_flags():
    b = torch.backends
    return (b.cudnn.benchmark, b.cudnn.allow_tf32, b.cudnn.enabled, b.cudnn.deterministic, b.cuda.matmul.allow_tf32)


def test_scoring_leaves_torch_global_flags_as_the_caller_set_them(scorer, batch):
    before = _torch_flags()
    scorer.score(batch[0])
    assert _torch_flags() == before


def test_the_cuda_settings_are_scoped_to_each_forward_pass():
    """The CUDA branch runs here without a GPU: it only sets and restores flags."""
    torch.backends.cuda.matmul.allow_tf32 = True  # a caller's own choice
    try:
        before = _torch_flags()
        with inference_context(torch.device("cuda"), "fp32"):
            assert torch.backends.cudnn.benchmark is True
            assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
        assert _torch_flags() == before
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "CUDA is not available ... Disabling autocast": expected here
            with inference_context(torch.device("cuda"), "bf16"):
                assert torch.backends.cuda.matmul.allow_tf32 is True  # fast modes keep what the caller allows
        assert _torch_flags() == before
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
