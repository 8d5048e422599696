"""MkDocs hook: formulas rendered to MathML when the site is built, so the pages need no script and no network.

``pymdownx.arithmatex`` (generic mode) leaves each formula as ``<span class="arithmatex">\\( … \\)</span>`` (inline)
or ``<div class="arithmatex">\\[ … \\]</div>`` (display). This hook replaces each one with the MathML that
``latex2mathml`` makes of the TeX, which every current browser draws natively. The TeX is kept in the ``alttext``
attribute for screen readers and copying. A formula the converter cannot read stops the build, naming the page.
"""

from __future__ import annotations

import html
import re
from typing import Any

from latex2mathml.converter import convert

__all__ = ["render_math", "to_mathml"]

_FORMULA = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.DOTALL)

#: Delimiters written as commands after ``\big``-like sizes, which the converter only reads as characters.
_SIZED_DELIMITERS = {
    r"\lVert": "‖",
    r"\rVert": "‖",
    r"\|": "‖",
    r"\lvert": "|",
    r"\rvert": "|",
    r"\langle": "⟨",
    r"\rangle": "⟩",
    r"\lfloor": "⌊",
    r"\rfloor": "⌋",
    r"\lceil": "⌈",
    r"\rceil": "⌉",
    r"\{": "{",
    r"\}": "}",
}
_SIZED = re.compile(
    r"(\\(?:big|Big|bigg|Bigg)[lrm]?)\s*(" + "|".join(re.escape(d) for d in _SIZED_DELIMITERS) + r")(?![a-zA-Z])"
)
#: TeX escapes that stand for one character inside ``\text{}``-like groups.
_TEXT_ESCAPES = {r"\_": "_", r"\%": "%", r"\&": "&amp;", r"\#": "#", r"\$": "$"}
_MTEXT = re.compile(r"(<mtext[^>]*>)(.*?)(</mtext>)", re.DOTALL)


def _strip_delimiters(tex: str) -> str:
    tex = tex.strip()
    for opening, closing in ((r"\(", r"\)"), (r"\[", r"\]"), ("$$", "$$")):
        if tex.startswith(opening) and tex.endswith(closing):
            return tex[len(opening) : -len(closing)].strip()
    return tex


def to_mathml(tex: str, *, display: bool) -> str:
    """The MathML of one TeX formula (without its ``\\( \\)`` / ``\\[ \\]`` delimiters)."""
    prepared = _SIZED.sub(lambda m: m.group(1) + _SIZED_DELIMITERS[m.group(2)], tex)
    mathml = convert(prepared, display="block" if display else "inline")

    def unescape_text(match: re.Match[str]) -> str:
        body = match.group(2)
        for escape, character in _TEXT_ESCAPES.items():
            body = body.replace(escape, character)
        return match.group(1) + body + match.group(3)

    mathml = _MTEXT.sub(unescape_text, mathml)
    alttext = html.escape(tex, quote=True).replace("\n", " ")
    return mathml.replace("<math ", f'<math alttext="{alttext}" ', 1)


def render_math(content: str, where: str = "") -> str:
    """``content`` (a page's HTML) with every arithmatex formula replaced by MathML."""

    def replace(match: re.Match[str]) -> str:
        tag, body = match.group(1), match.group(2)
        tex = _strip_delimiters(html.unescape(body))
        try:
            mathml = to_mathml(tex, display=tag == "div")
        except Exception as error:  # the converter raises many kinds; the formula and page are what matter
            raise ValueError(f"{where}: cannot render the formula {tex!r} ({type(error).__name__}: {error})") from None
        return f'<div class="math-display">{mathml}</div>' if tag == "div" else mathml

    return _FORMULA.sub(replace, content)


def on_page_content(html_content: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs event: the page's rendered Markdown, before the theme wraps it."""
    from mkdocs.exceptions import PluginError

    try:
        return render_math(html_content, page.file.src_uri)
    except ValueError as error:
        raise PluginError(str(error)) from None
