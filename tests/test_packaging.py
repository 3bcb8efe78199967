"""What the package promises about its install: every extra a message names exists, and the plain install
reads remote sources over http(s) (the README's `dgiqa batch https://host/x.tar`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# `pip install 'dgiqa[ray]'`, `"dgiqa[parquet]"`, and the rich-escaped `dgiqa\\[serve-ray]` of --help texts
NAMED_EXTRA = re.compile(r"pip install ['\"]?dgiqa\\*\[([A-Za-z0-9_,\- ]+)\]")


def named_extras() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "dgiqa_cli").rglob("*.py")):
        for match in NAMED_EXTRA.finditer(path.read_text(encoding="utf-8")):
            for extra in match[1].split(","):
                found.setdefault(extra.strip(), []).append(str(path.relative_to(ROOT)))
    return found


def test_every_extra_a_message_names_exists():
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    named = named_extras()
    assert {"ray", "serve", "serve-ray"} <= set(named)  # the pattern does find the messages we know of
    missing = {extra: files for extra, files in named.items() if extra not in extras}
    assert missing == {}, f"messages name extras that pyproject.toml does not define: {missing}"
    assert NAMED_EXTRA.search('pip install "dgiqa[parquet]"')[1] == "parquet"  # the old message would be caught


def test_the_plain_install_reads_https_sources():
    """fsspec's HTTP filesystem needs aiohttp: a core dependency (through fsspec[http]), not a test-only one."""
    core = PYPROJECT["project"]["dependencies"]
    assert any(re.match(r"fsspec\[[^\]]*\bhttp\b", dep) for dep in core), core
    assert not any(dep.startswith("aiohttp") for dep in PYPROJECT["project"]["optional-dependencies"]["test"])
    script = "import fsspec; fs = fsspec.filesystem('https'); print(type(fs).__name__)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "HTTPFileSystem", done.stderr
