"""File names as text: losslessly in output rows, harmlessly on a terminal.

Paths in rows
    A row must be valid UTF-8 text, but a Linux file name is any bytes: Python
    hands ``caf\\xe9.jpg`` (Latin-1 bytes) to us as ``"caf\\udce9.jpg"`` (a
    surrogate escape). :func:`encode_path` writes such a name so that it reads
    well and comes back exactly (:func:`decode_path`), in CSV and JSONL alike:

    * a path that needs no escaping is written as it is, backslashes and all
      (``C:\\photos\\a.jpg``, ``/data/été.png``): almost every path;
    * otherwise *every* backslash becomes ``\\x5c``, an undecodable byte NN
      (U+DC80..U+DCFF) becomes ``\\xNN``, and any other lone surrogate (only
      possible on Windows) becomes ``\\udNNN``. So ``caf\\udce9.jpg`` is
      written ``caf\\xe9.jpg``.

    A path "needs escaping" when it holds a surrogate, or when it already
    contains a token of the escaped form (``\\x80``..``\\xff``, ``\\x5c``,
    ``\\ud800``..``\\udfff``; lower-case ``x``/``u``, hex digits in either case): a real folder called ``xe9`` under
    ``C:\\`` is written ``C:\\x5cxe9``. Decoding is therefore unambiguous:
    a cell holding no token is a literal path; a cell holding one is escaped,
    and in it every backslash starts a token.

Terminals and messages
    :func:`printable` (and :func:`display_path`, :func:`one_line` built on it)
    escape control characters, bidi overrides and undecodable bytes, so that a
    file name never recolours a terminal or splits a log line. For people only:
    that form is not decoded again.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata

_TOKEN = re.compile(r"\\(?:x(?:[89a-fA-F][0-9a-fA-F]|5[cC])|u[dD][89a-fA-F][0-9a-fA-F]{2})")
_SURROGATE = re.compile("[\ud800-\udfff]")


def encode_path(path: str) -> str:
    """A path as row text: unchanged unless it holds undecodable bytes or looks escaped (module docstring)."""
    path = os.fspath(path)
    if not (_SURROGATE.search(path) or _TOKEN.search(path)):
        return path
    out = []
    for ch in path:
        code = ord(ch)
        if ch == "\\":
            out.append("\\x5c")
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def decode_path(text: str) -> str:
    """The path :func:`encode_path` wrote (a literal path, holding no escape token, comes back as it is)."""
    if not _TOKEN.search(text):
        return text

    def unescape(match: re.Match) -> str:
        token = match.group()
        code = int(token[2:], 16)
        if token[1] in "uU":
            return chr(code)
        return "\\" if code == 0x5C else chr(0xDC00 + code)

    return _TOKEN.sub(unescape, text)


_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """Text safe to print on one terminal line: control characters, bidi overrides and undecodable bytes escaped.

    A file name can hold ESC (recolour the terminal, move the cursor), a newline (fake a line of output) or
    U+202E (show ``gpj.exe`` as ``exe.jpg``). For people only: the result is not meant to be decoded again.
    """
    out = []
    for ch in str(text):
        code = ord(ch)
        if ch in _SHORT:
            out.append(_SHORT[ch])
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or 0x7F <= code <= 0x9F:
            out.append(f"\\x{code:02x}")
        elif ch in _BIDI or unicodedata.category(ch) in ("Cs", "Zl", "Zp"):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def path_text(path: str | bytes | os.PathLike) -> str:
    """The path as ``str``; undecodable bytes stay as surrogate escapes (``os.fsdecode``), so it still opens."""
    return os.fsdecode(path) if isinstance(path, bytes | os.PathLike) else str(path)


def display_path(path: str | bytes | os.PathLike) -> str:
    """A path as printable single-line text (:func:`printable`)."""
    return printable(path_text(path))


def one_line(text: str) -> str:
    """``text`` with line breaks as spaces and unprintable characters escaped (decoder messages vary)."""
    return " ".join(printable(part) for part in str(text).split()) or str(text).strip()


_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def special_kind(mode: int) -> str | None:
    """What a file that is neither regular nor a folder is, in words (``None`` for those two).

    Such files are refused by name before anything opens them: opening a FIFO blocks, and a
    device such as ``/dev/zero`` never ends.
    """
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((name for test, name in _SPECIAL_KINDS if test(mode)), "a special file")
