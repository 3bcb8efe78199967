"""The package's shape: data flows one way, so no module imports another that (directly or not) imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dgiqa_cli"
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """Every dgiqa_cli module that ``name`` imports, at the top or inside a function."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            # `from .x import y`: y is a submodule, or a name defined in x
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_walker_sees_relative_and_lazy_imports():
    assert "dgiqa_cli.weights.resolve" in imports_of("dgiqa_cli.weights")  # a lazy import inside a function
    assert "dgiqa_cli.cli.common" in imports_of("dgiqa_cli.cli.weights")  # `from . import common`
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_circle_anywhere():
    graph = {name: imports_of(name) for name in MODULES}
    assert find_cycle(graph) is None


def test_commands_never_import_each_other():
    from dgiqa_cli.cli import SHARED

    shared = {f"dgiqa_cli.cli.{name}" for name in SHARED}
    commands = [n for n in MODULES if n.startswith("dgiqa_cli.cli.") and n not in shared]
    assert {"dgiqa_cli.cli.score", "dgiqa_cli.cli.batch", "dgiqa_cli.cli.explain", "dgiqa_cli.cli.weights"} <= set(
        commands
    )
    for name in commands:
        assert imports_of(name) & set(commands) == set(), name
    for name in shared:  # shared modules import no command
        assert imports_of(name) & set(commands) == set(), name
    assert not any(n.startswith("dgiqa_cli.cli") for n in imports_of("dgiqa_cli.cli.common"))


def test_rendering_never_imports_the_explanation():
    computing = {f"dgiqa_cli.explain.{name}" for name in ("explanation", "families", "panel", "outputs")}
    assert imports_of("dgiqa_cli.explain.render") & computing == set()


def test_library_never_imports_the_command_line():
    library = [n for n in MODULES if not n.startswith("dgiqa_cli.cli") and n != "dgiqa_cli.__main__"]
    for name in library:
        assert not any(i.startswith("dgiqa_cli.cli") for i in imports_of(name)), name


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_over_600_lines(name):
    assert len(MODULES[name].read_text(encoding="utf-8").splitlines()) <= MAX_LINES


def test_the_top_level_shows_the_architecture():
    """At most ten folders, one per concern, and beside them only the package's own files."""
    entries = [p for p in PACKAGE.iterdir() if p.name != "__pycache__"]
    folders = sorted(p.name for p in entries if p.is_dir())
    assert len(folders) <= 10, folders
    assert all((PACKAGE / folder / "__init__.py").is_file() for folder in folders)  # each a real package
    files = sorted(p.name for p in entries if p.is_file())
    assert files == ["__init__.py", "__main__.py", "errors.py", "py.typed", "version.py"]


def test_no_module_name_has_two_meanings():
    """ "export" once meant CSV rows and ONNX networks: a library module's name is unique in the package.

    The command modules (``cli/explain.py`` is the ``explain`` command) are named after what they run."""
    from collections import Counter

    library = [name for name, path in MODULES.items() if path.name != "__init__.py" and ".cli." not in name]
    names = Counter(name.rpartition(".")[2] for name in library)
    assert [name for name, count in names.items() if count > 1] == []
