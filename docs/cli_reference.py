"""MkDocs hook: the command-line reference, generated from the Typer app by Typer's own docs generator.

The page ``reference/cli.md`` holds the marker below; at build time it is replaced by what
``typer dgiqa_cli.cli utils docs`` prints, so the site says exactly what ``dgiqa COMMAND --help`` says.
A page that lost its marker fails the build instead of publishing a reference with nothing in it.
"""

from __future__ import annotations

import html
import re

import typer
from typer.cli import MARKUP_MODE_KEY, get_docs_for_click

MARKER = "<!-- dgiqa: generated CLI reference -->"
PAGE = "reference/cli.md"

# Help texts are plain text, not Markdown: '*.jpg', __key__ or [default] must not turn into emphasis or links.
# Code spans (`dgiqa weights import`) and the HTML that Typer makes of rich markup are kept as they are.
KEPT = re.compile(r"(`[^`]*`|<[^>]+>)")
SECTION = re.compile(r"^\*\*\w+\*\*:$")  # **Usage**:, **Options**:, ...
LIST_ITEM = re.compile(r"^(\* `[^`]*`:? ?)(.*)$")  # * `--glob <str>`: help


def escape_text(text: str) -> str:
    parts = KEPT.split(text)
    for i, part in enumerate(parts):
        if part.startswith("`"):
            parts[i] = html.unescape(part)  # Typer escapes HTML; inside a code span that would show as &#x27;
        elif not part.startswith("<"):
            parts[i] = re.sub(r"([\\*_\[\]])", r"\\\1", part)
    return "".join(parts)


def escape_help(markdown: str) -> str:
    """Escape the help texts in Typer's Markdown; headings, section titles and code blocks stay as they are."""
    lines, in_code = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and not line.startswith("#") and not SECTION.match(line):
            item = LIST_ITEM.match(line)
            line = item.group(1) + escape_text(item.group(2)) if item else escape_text(line)
        lines.append(line)
    return "\n".join(lines)


def cli_markdown() -> str:
    """Every command, argument and option of ``dgiqa``, as Markdown (headings from level 2 down)."""
    from dgiqa_cli.cli import app

    command = typer.main.get_command(app)
    ctx = typer.Context(command, info_name="dgiqa", obj={MARKUP_MODE_KEY: app.rich_markup_mode})
    return escape_help(get_docs_for_click(obj=command, ctx=ctx, name="dgiqa", indent=1))


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{PAGE} lost its marker {MARKER!r}: the CLI reference would be empty")
    return markdown.replace(MARKER, cli_markdown())
