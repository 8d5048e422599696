"""Reading the lines of a data file so that every failure names the file and the line.

``.gz`` files are decompressed on the fly. A byte sequence that is not valid in the file's encoding, or a
compressed stream that ends early, raises ``ValueError`` with ``path:line`` instead of a bare
``UnicodeDecodeError`` / ``EOFError``. A UTF-8 byte-order mark at the start of the file is skipped.
"""

from __future__ import annotations

import codecs
import gzip
import io
import zlib
from collections.abc import Iterator
from pathlib import Path

__all__ = ["check_encoding", "read_lines"]


def check_encoding(encoding: str) -> str:
    """``encoding`` if Python knows it, else ``ValueError`` naming the argument."""
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise ValueError(
            f"encoding must be a text encoding Python knows (e.g. 'utf-8', 'latin-1'), got {encoding!r}"
        ) from None
    return encoding


def _open_binary(path: Path) -> io.BufferedIOBase:
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.suffix == ".gz":
        return gzip.GzipFile(path, "rb")
    return path.open("rb")


def read_lines(path: Path, encoding: str = "utf-8", *, keep_ends: bool = False) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` for every line of ``path`` (1-based), decoded with ``encoding``.

    Line ends are stripped unless ``keep_ends`` (the csv module needs them to read quoted line breaks).
    """
    check_encoding(encoding)
    lineno = 0
    with _open_binary(path) as handle:
        lines = iter(handle)
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                return
            except (EOFError, gzip.BadGzipFile, zlib.error) as error:
                raise ValueError(
                    f"{path}: the compressed data is truncated or corrupt after line {lineno} ({error})"
                ) from None
            lineno += 1
            if lineno == 1 and encoding.replace("_", "-").lower() in ("utf-8", "utf8"):
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{path}:{lineno}: byte 0x{raw[error.start]:02x} at column {error.start + 1} is not valid "
                    f"{encoding} text (pass encoding=... if the file uses another encoding)"
                ) from None
            yield lineno, (text if keep_ends else text.rstrip("\r\n"))
