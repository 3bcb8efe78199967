"""The documentation site builds (`mkdocs build --strict`: no broken link, no missing page) and its generated
references are complete: every command and every option of `dgiqa batch`, and the public Python API."""

from __future__ import annotations

import ast
import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from dgiqa_cli.cli import app

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once for this module as CI builds it."""
    for package in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        pytest.importorskip(package, reason='the docs extra is not installed (pip install -e ".[docs]")')
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's notice about MkDocs 2: not ours to print
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    return out


def page_text(site: Path, page: str) -> str:
    return (site / page / "index.html").read_text(encoding="utf-8")


def visible(markup: str) -> str:
    """What a reader sees: tags dropped, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def command_paths(command, prefix: str = "dgiqa") -> list[tuple[str, object]]:
    """Every command and sub-command of the click tree, with its full name ('dgiqa weights push')."""
    found = [(prefix, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += command_paths(sub, f"{prefix} {name}")
    return found


def section(markup: str, title: str) -> str:
    """The part of a generated page under the heading `title`, up to the next heading of any level."""
    start = re.search(rf"<h[1-6][^>]*><code>{re.escape(title)}</code>", markup)
    assert start, f"no heading for {title}"
    end = re.compile(r"<h[1-6][\s>]").search(markup, start.end())
    return markup[start.start() : end.start() if end else len(markup)]


def test_every_argument_and_option_has_a_help_text():
    """The help texts are the documentation (the CLI reference is made of them): none may be missing."""
    missing = [
        f"{name} {param.opts[0] if param.opts else param.name}"
        for name, command in command_paths(typer.main.get_command(app))
        for param in command.params
        if not (getattr(param, "help", None) or "").strip()
    ]
    assert not missing, f"no help text: {missing}"


def test_cli_reference_has_every_command_from_the_code(site):
    markup = page_text(site, "reference/cli")
    commands = command_paths(typer.main.get_command(app))
    assert {"dgiqa batch", "dgiqa score", "dgiqa weights push"} <= {name for name, _ in commands}
    for name, command in commands:
        text = visible(section(markup, name))
        summary = (command.help or "").strip().splitlines()[0]
        assert summary in text, f"{name}: its help ({summary!r}) is not on the page"


def test_cli_reference_has_every_option_of_batch_with_its_help(site):
    batch = typer.main.get_command(app).commands["batch"]
    text = visible(section(page_text(site, "reference/cli"), "dgiqa batch"))
    options = [param for param in batch.params if param.param_type_name == "option"]
    assert len(options) > 30  # the shared scoring options are there too, not only batch's own
    for option in options:
        for flag in (*option.opts, *option.secondary_opts):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), f"{flag} is not on the page"
        # Help texts are plain text: '*.jpg', __key__ and [default] must survive Markdown unchanged.
        plain = option.help.replace("\\[", "[").split("`")[0].strip()
        assert " ".join(plain.split()) in text, f"{option.opts[0]}: help text lost or altered"


def test_api_reference_documents_the_public_names(site):
    markup = page_text(site, "reference/api")
    documented = set(re.findall(r'id="(dgiqa_cli\.[\w.]+)"', markup))
    exported = ast.literal_eval(
        re.search(r"__all__ = (\[.*?\])", (REPO / "dgiqa_cli/__init__.py").read_text(), re.S)[1]
    )
    errors = [n.name for n in ast.parse((REPO / "dgiqa_cli/errors.py").read_text()).body if isinstance(n, ast.ClassDef)]
    for name in [n for n in exported if n != "__version__"] + errors:
        assert any(ident.endswith(f".{name}") for ident in documented), f"{name} is not in the API reference"
    text = visible(markup)
    assert "Scores pictures the way the authors' scripts do" in text  # Scorer's docstring, read from the code
    assert "The (H, W, 3) uint8 RGB array the models see" in text  # load_image's
    assert "dgiqa_cli.inference.scorer.Scorer.score" in documented and "dgiqa_cli.io.images.load_image" in documented


def test_site_needs_no_network(site):
    pages = "".join(p.read_text(encoding="utf-8") for p in site.rglob("*.html"))
    assert "fonts.googleapis.com" not in pages and "fonts.gstatic.com" not in pages
