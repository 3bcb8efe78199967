"""Resolving weights: registry names through the Hugging Face cache, files, hf:// addresses, safe loading."""

from __future__ import annotations

import pickle

import pytest
import torch
from conftest import FIXTURES, prefill_hub_cache
from safetensors.torch import save_file

from dgiqa_cli.weights import WeightsError
from dgiqa_cli.weights.digests import sha256_of
from dgiqa_cli.weights.download import HubLocation, parse_hf_uri
from dgiqa_cli.weights.files import ResolvedWeights, read_state_dict, verify_sha256
from dgiqa_cli.weights.registry import default_model_name, depth_entries, model_entries
from dgiqa_cli.weights.resolve import resolve_weights

pytestmark = pytest.mark.full_size  # scores are compared with the authors' golden numbers


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_registry_names_the_authors_models_and_depth_models():
    assert default_model_name() == "dgiqa-koniq"
    koniq, kadid = model_entries()["dgiqa-koniq"], model_entries()["dgiqa-kadid"]
    assert (koniq.trained_on, kadid.trained_on) == ("KonIQ-10k", "KADID-10k")
    assert koniq.score_range == (0.0, 1.0) and koniq.depth_model == "vitl"
    assert "uf-robopi/DGIQA" in koniq.source
    assert {e: depth_entries()[e].repo for e in ("vits", "vitb", "vitl")} == {
        "vits": "LiheYoung/depth_anything_vits14",
        "vitb": "LiheYoung/depth_anything_vitb14",
        "vitl": "LiheYoung/depth_anything_vitl14",
    }


def test_registry_name_resolves_through_prefilled_cache_offline(
    offline_cache, tmp_path, dgiqa_state, depth_state, golden
):
    """No network: `--weights dgiqa-koniq` and `--depth-weights vits` come out of the standard cache."""
    from dgiqa_cli import Scorer

    koniq = model_entries()["dgiqa-koniq"]
    save_file(dgiqa_state, tmp_path / "model.safetensors")
    prefill_hub_cache(offline_cache, koniq.repo, koniq.filename, tmp_path / "model.safetensors")
    vits = depth_entries()["vits"]
    torch.save(depth_state, tmp_path / "pytorch_model.bin")
    prefill_hub_cache(offline_cache, vits.repo, vits.filename, tmp_path / "pytorch_model.bin")

    resolved = resolve_weights("dgiqa-koniq")
    assert resolved.entry is koniq and resolved.path.is_file()
    assert str(resolved.path).startswith(str(offline_cache))

    scorer = Scorer("dgiqa-koniq", depth_model="vits", crops=1, device="cpu")
    assert scorer.model_name == "dgiqa-koniq" and scorer.depth_model_name == "vits"
    result = scorer.score(FIXTURES / "synthetic_480x640.png")
    expected = golden["pipeline"]["mos"]["synthetic_480x640.png|crops=1"]
    assert result.score == pytest.approx(expected, abs=golden["pipeline"]["atol"])


def test_nothing_cached_offline_says_how_to_get_the_weights(offline_cache):
    with pytest.raises(WeightsError) as info:
        resolve_weights("dgiqa-koniq")
    message = str(info.value)
    assert "not in the Hugging Face cache" in message and "offline mode is on (HF_HUB_OFFLINE)" in message
    assert "DGIQA_Koniq10k.pth" in message and "https://github.com/uf-robopi/DGIQA" in message
    assert "--weights" in message

    with pytest.raises(WeightsError) as info:
        resolve_weights("vitl", kind="depth")
    assert "hf download LiheYoung/depth_anything_vitl14 pytorch_model.bin" in str(info.value)
    assert "--depth-weights" in str(info.value)


def test_hf_uri_resolves_through_the_cache(offline_cache, tmp_path, depth_state):
    torch.save(depth_state, tmp_path / "weights.pth")
    prefill_hub_cache(offline_cache, "someone/depth", "sub/weights.pth", tmp_path / "weights.pth")
    resolved = resolve_weights("hf://someone/depth/sub/weights.pth", kind="depth")
    assert resolved.path.read_bytes() == (tmp_path / "weights.pth").read_bytes()


def test_hf_uri_parsing():
    assert parse_hf_uri("hf://a/b") == HubLocation("a/b", "model.safetensors", None)
    assert parse_hf_uri("hf://a/b/x/y.pth@v1") == HubLocation("a/b", "x/y.pth", "v1")
    with pytest.raises(WeightsError, match="not a Hub address"):
        parse_hf_uri("hf://lonely")


def test_unknown_spec_lists_what_is_accepted(tmp_path):
    with pytest.raises(WeightsError, match="is not a registry name \\(dgiqa-koniq, dgiqa-kadid, life-iqa-koniq\\)"):
        resolve_weights("dgiqa-spaq")
    with pytest.raises(WeightsError, match="no such weights file"):
        resolve_weights(str(tmp_path / "missing.pth"))


class Boom:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_is_never_executed(tmp_path, capsys):
    with open(tmp_path / "evil.pth", "wb") as fh:
        pickle.dump({"fc.weight": Boom()}, fh)
    with pytest.raises(WeightsError, match="refused to load"):
        read_state_dict(tmp_path / "evil.pth")
    assert "this must never run" not in capsys.readouterr().out


def test_truncated_checkpoints_are_clear_errors(tmp_path, depth_state):
    torch.save(depth_state, tmp_path / "ok.pth")
    save_file(depth_state, tmp_path / "ok.safetensors")
    for name in ("ok.pth", "ok.safetensors"):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut-{name}"
        cut.write_bytes(data[: len(data) // 3])
        with pytest.raises(WeightsError, match=f"cut-{name}"):
            read_state_dict(cut)


def test_checksum_is_verified(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"weights")
    verify_sha256(path, sha256_of(path))
    with pytest.raises(WeightsError, match="checksum mismatch .* expected 00ff"):
        verify_sha256(path, "00ff")


def test_registry_checksum_is_checked_on_load(tmp_path, dgiqa_state):
    from dgiqa_cli.models import build_model
    from dgiqa_cli.weights.files import load_into

    torch.save(dgiqa_state, tmp_path / "w.pth")
    wrong = ResolvedWeights(tmp_path / "w.pth", "w.pth", sha256="0" * 64)
    with pytest.raises(WeightsError, match="checksum mismatch"):
        load_into(build_model("dgiqa"), "dgiqa", wrong)
