"""What ``dgiqa weights info`` reports about weights: where they are, whether they are intact, what they hold."""

from __future__ import annotations

from dgiqa_cli.errors import WeightsError
from dgiqa_cli.weights.digests import sha256_of
from dgiqa_cli.weights.files import ResolvedWeights, checksum_remedy, load_checked, read_state_dict
from dgiqa_cli.weights.importing import detect_arch, dtype_names, infer_model_config, known_release, parameter_count
from dgiqa_cli.weights.registry import RegistryEntry
from dgiqa_cli.weights.resolve import resolve_any


def describe(spec: str) -> dict:
    """What ``dgiqa weights info`` reports about a name, a file, a folder or a cached hf:// address."""
    resolved, _ = resolve_any(spec, local_only=True)
    entry = resolved.entry
    path = resolved.path
    sha = sha256_of(path)
    release = None
    if entry is not None and entry.origin == "packaged":
        from dgiqa_cli.weights.release import release_info

        release = release_info(entry, check=False)  # the file's hash is compared below
        if release is not None and release["path"] == str(path) and not resolved.sha256:
            resolved = ResolvedWeights(path, resolved.label, entry, release["sha256"])
    report: dict = {
        "name": spec,
        "file": str(path),
        "size": path.stat().st_size,
        "sha256": sha,
        "expected_sha256": resolved.sha256,
        "checksum": None if not resolved.sha256 else ("ok" if sha == resolved.sha256.lower() else "MISMATCH"),
        "architecture": entry.arch if entry else None,
        "model_config": dict(entry.config.get("model", {})) if entry else {},
        "parameters": None,
        "tensors": None,
        "dtype": None,
        "loads": None,
        "error": None,
        "trained_on": entry.trained_on if entry else "",
        "score_range": list(entry.score_range) if entry and entry.kind == "model" else None,
        "depth_model": entry.depth_model if entry else None,
        "source": _source_text(entry),
        "source_sha256": entry.source_sha256 if entry else None,
        "license": entry.license if entry else "",
        "known_release": None,
        # a file fetched from the authors' release: its sha256 from the registry, or recorded at first download
        "release": release,
    }
    match = known_release(sha)
    if match is not None:
        what = "its source file" if sha == match.source_sha256 and sha != match.sha256 else "its weights"
        report["known_release"] = {"name": match.name, "kind": match.kind, "origin": match.origin, "as": what}
    if report["checksum"] == "MISMATCH":
        remedy = checksum_remedy(resolved)
        report["error"] = (
            f"{path}: checksum mismatch (sha256 {sha}, expected {resolved.sha256}); "
            "the file is truncated or altered." + (f" {remedy}" if remedy else "")
        )
        return report
    try:
        state_dict = read_state_dict(path)
        arch = entry.arch if entry else detect_arch(state_dict, str(path))
        if entry is not None and "model" in entry.config:
            config = dict(entry.config["model"])
        else:
            config = infer_model_config(arch, state_dict)
        report.update(
            architecture=arch,
            model_config=config,
            tensors=len(state_dict),
            dtype=dtype_names(state_dict),
        )
        unchecked = ResolvedWeights(path, resolved.label)  # the checksum is compared above
        model = load_checked(arch, config, unchecked, state_dict)
        report["parameters"] = parameter_count(model)
        report["loads"] = True
    except WeightsError as exc:
        report["loads"] = False
        report["error"] = str(exc)
    return report


def _source_text(entry: RegistryEntry | None) -> str:
    if entry is None:
        return ""
    parts = [p for p in (entry.source_file, entry.source) if p]
    return " from ".join(parts) if len(parts) == 2 else (parts[0] if parts else "")
