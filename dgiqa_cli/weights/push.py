"""Publishing imported weights to the Hub (``dgiqa weights push``), model card included."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from dgiqa_cli.errors import UnknownWeightsError, WeightsError
from dgiqa_cli.weights.card import model_card
from dgiqa_cli.weights.digests import sha256_of
from dgiqa_cli.weights.download import _transport_errors, hub_endpoint, hub_offline
from dgiqa_cli.weights.hubformat import CONFIG_FILE, DEFAULT_HUB_FILE, kind_of_arch, read_config
from dgiqa_cli.weights.registry import RegistryEntry, RegistryError, find_entry, save_local_entry

REPO_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

# -- push -----------------------------------------------------------------------------------------


@dataclass
class PushPlan:
    folder: Path
    repo: str
    private: bool
    config: dict
    card: str
    files: list[tuple[str, int]]  # (path in repo, bytes)
    endpoint: str
    local_name: str | None = None

    @property
    def total_size(self) -> int:
        return sum(size for _, size in self.files)


def weights_folder(spec: str) -> tuple[Path, str | None]:
    """The Hub-format folder of an imported name, or a folder given as a path."""
    try:
        entry = find_entry(spec, "model") or find_entry(spec, "depth")
    except RegistryError as exc:
        raise WeightsError(str(exc)) from None
    if entry is not None:
        if entry.origin != "local":
            raise UnknownWeightsError(
                f"{spec!r} is a packaged registry name; push imported weights (`dgiqa weights import`) "
                "or a folder in the Hub format"
            )
        return Path(entry.path), spec
    folder = Path(spec).expanduser()
    if folder.is_dir() and (folder / CONFIG_FILE).is_file():
        return folder, None
    raise UnknownWeightsError(
        f"{spec!r} is neither an imported name nor a folder holding {CONFIG_FILE} and {DEFAULT_HUB_FILE}"
    )


def plan_push(spec: str, repo: str, private: bool = False) -> PushPlan:
    """Everything a push would do, checked, without any network access."""
    if not REPO_PATTERN.match(repo):
        raise UnknownWeightsError(f"{repo!r} is not a Hub repository name; expected OWNER/REPO")
    folder, local_name = weights_folder(spec)
    config = read_config(folder / CONFIG_FILE)
    weights = folder / config.get("weights_file", DEFAULT_HUB_FILE)
    if not weights.is_file():
        raise WeightsError(f"{folder}: {CONFIG_FILE} names {weights.name!r}, which is not in the folder")
    if config.get("sha256"):
        actual = sha256_of(weights)
        if actual != config["sha256"].lower():
            raise WeightsError(
                f"{weights}: checksum mismatch (sha256 {actual}, expected {config['sha256']}); "
                "refusing to publish altered weights. Import the checkpoint again."
            )
    card = model_card(config, repo)
    files = [(CONFIG_FILE, (folder / CONFIG_FILE).stat().st_size), (weights.name, weights.stat().st_size)]
    files.append(("README.md", len(card.encode("utf-8"))))
    return PushPlan(
        folder=folder,
        repo=repo,
        private=private,
        config=config,
        card=card,
        files=files,
        endpoint=hub_endpoint() or "https://huggingface.co",
        local_name=local_name,
    )


def push(plan: PushPlan, *, token: str | None = None, message: str | None = None) -> str:
    """Create the repository (if needed) and upload the folder with its model card; return the commit URL."""
    if hub_offline():
        raise WeightsError("cannot push while offline mode is on (HF_HUB_OFFLINE)")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    (plan.folder / "README.md").write_text(plan.card, encoding="utf-8")
    api = HfApi(endpoint=plan.endpoint, token=token)
    weights_file = plan.config.get("weights_file", DEFAULT_HUB_FILE)
    try:
        api.create_repo(plan.repo, private=plan.private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=plan.repo,
            folder_path=plan.folder,
            allow_patterns=[CONFIG_FILE, weights_file, "README.md"],
            commit_message=message or f"Upload {plan.config.get('name', plan.repo)} ({plan.config['architecture']})",
            repo_type="model",
        )
    except RepositoryNotFoundError:
        raise WeightsError(
            f"{plan.repo}: the Hub refused access to the repository; log in with a write token "
            "(`hf auth login`, or set HF_TOKEN / pass --token)"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise WeightsError(
                f"{plan.repo}: not allowed to write ({status}); log in with a write token "
                "(`hf auth login`, or set HF_TOKEN / pass --token)"
            ) from None
        raise WeightsError(f"{plan.repo}: push failed ({str(exc).splitlines()[0]})") from None
    except (OSError, *_transport_errors()) as exc:
        raise WeightsError(f"{plan.repo}: push failed, {plan.endpoint} could not be reached ({exc})") from None
    if plan.local_name:
        try:
            entry = find_entry(plan.local_name, kind_of_arch(plan.config["architecture"]))
            if entry is not None and entry.origin == "local":
                save_local_entry(_with_repo(entry, plan.repo))
        except RegistryError as exc:
            raise WeightsError(str(exc)) from None
    return str(getattr(info, "commit_url", info))


def _with_repo(entry: RegistryEntry, repo: str) -> RegistryEntry:

    return replace(entry, repo=repo, published=True)
