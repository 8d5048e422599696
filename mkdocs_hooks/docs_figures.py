"""MkDocs hook: a figure wider than the text column is shown at the size it was drawn, in a frame that scrolls
sideways, instead of being squeezed into the column (where a 1360-pixel, four-panel figure shrinks to half size
and its labels become unreadable).

The hook reads each PNG's width from its header; an ``<img>`` wider than :data:`COLUMN_PX` is wrapped in
``<span class="wide-figure">`` (``docs/stylesheets/extra.css`` shows it unscaled, scrolling sideways) with a link
to the image at full size. :mod:`docs_check` verifies the built site against the same numbers.
"""

from __future__ import annotations

import posixpath
import re
import struct
from pathlib import Path
from typing import Any

__all__ = ["COLUMN_PX", "WIDE_CLASS", "local_png", "png_size", "wrap_wide_figures"]

#: Width in CSS pixels of the text column at the narrowest desktop layout (1220-pixel window: 673 px, both sidebars
#: shown, ``extra.css``); a figure up to this width is never scaled down.
COLUMN_PX = 670

#: The class of the frame that shows a wide figure at its drawn size (``extra.css`` gives it ``max-width: none``).
WIDE_CLASS = "wide-figure"

_IMG = re.compile(r"<img\b[^>]*>")
_SRC = re.compile(r'\bsrc="([^"]+)"')


def png_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` in pixels from a PNG file's header; ``ValueError`` if it is not a PNG."""
    with path.open("rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG file")
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def local_png(src: str, page_url: str, root: Path) -> Path | None:
    """The PNG file under ``root`` (the docs or the site folder) that ``src``, as written in the page at
    ``page_url`` (``recipes/boxsnake/``), points to; None for another kind of image or a remote one."""
    src = src.split("#")[0].split("?")[0]
    if re.match(r"^[a-z]+:", src) or src.startswith("/") or not src.lower().endswith(".png"):
        return None
    path = root / posixpath.normpath(posixpath.join(page_url, src))
    return path if path.is_file() else None


def wrap_wide_figures(content: str, page_url: str, docs_dir: Path) -> str:
    """``content`` with every local PNG wider than :data:`COLUMN_PX` framed in ``<span class="wide-figure">``."""

    def wrap(match: re.Match[str]) -> str:
        img = match.group(0)
        src = _SRC.search(img)
        path = local_png(src.group(1), page_url, docs_dir) if src else None
        if src is None or path is None or png_size(path)[0] <= COLUMN_PX:
            return img
        return (
            f'<span class="{WIDE_CLASS}" tabindex="0" role="group" aria-label="figure (scrolls sideways)">{img}'
            f'<a class="wide-figure__full" href="{src.group(1)}">open the figure at full size</a></span>'
        )

    return _IMG.sub(wrap, content)


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs event: frame the wide figures of a page (image paths are relative to the page's URL by now)."""
    return wrap_wide_figures(html, page.url, Path(config["docs_dir"]))
