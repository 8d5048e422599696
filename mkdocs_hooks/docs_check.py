"""MkDocs hook: the built site is checked page by page, and the build fails on

* **unrendered math**: a formula left as TeX (an ``arithmatex`` element, ``\\(``, ``\\[``, ``$$`` or a ``\\command``
  in the page's text) or one the converter could not read (``<merror>``, a ``\\command`` inside the MathML);
* **the network**: a script, stylesheet, font, image or frame loaded from another site (the pages must work
  offline);
* **squeezed figures**: a PNG shown narrower than it was drawn. Its drawn width comes from the file's header; the
  width it is shown at follows from the page and ``extra.css``: an explicit ``width``, else its own width inside a
  ``wide-figure`` frame (which never scales), else at most the text column (:data:`docs_figures.COLUMN_PX`).

:func:`check_page` does the work on one page's HTML, so the tests can feed it small pages.
"""

from __future__ import annotations

import logging
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from docs_figures import COLUMN_PX, WIDE_CLASS, local_png, png_size

__all__ = ["check_page", "check_site", "check_stylesheet"]

log = logging.getLogger("mkdocs.hooks.docs_check")

#: Text that only TeX left unrendered contains: ``\(``, ``\[``, ``$$``, a ``\command``, or a ``$ ... $`` span with
#: a TeX character in it (``$K = $``; a price such as ``$5 and $6`` has none).
_TEX_IN_TEXT = re.compile(r"\\[()\[\]]|\$\$|\\[a-zA-Z]{2,}|\$[^$\n]*[=^_{}\\][^$\n]*\$")
_NETWORK = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
_TOKENS = {"mi", "mo", "mn", "mtext", "ms"}
#: MathML elements that take a fixed number of children (a missing one is a formula the converter misread).
_ARITY = {"mfrac": 2, "msub": 2, "msup": 2, "munder": 2, "mover": 2, "mroot": 2, "msubsup": 3, "munderover": 3}
_SKIP_TEXT = {"code", "pre", "script", "style", "kbd", "samp", "textarea"}
_RESOURCE_ATTRIBUTES = {
    "script": "src",
    "img": "src",
    "iframe": "src",
    "source": "src",
    "audio": "src",
    "video": "src",
    "embed": "src",
    "object": "data",
}


class _Page(HTMLParser):
    """Walks one page, keeping the open elements (tag and classes) to know where each text and image sits."""

    def __init__(self, page_url: str, site_dir: Path) -> None:
        super().__init__(convert_charrefs=True)
        self.page_url = page_url
        self.site_dir = site_dir
        self.problems: list[str] = []
        self.wide: list[str] = []
        self._stack: list[tuple[str, set[str]]] = []
        self._children: list[int] = []  # child elements seen so far by each open element

    def _inside(self, tag: str) -> bool:
        return any(name == tag for name, _ in self._stack)

    def _inside_class(self, cls: str) -> bool:
        return any(cls in classes for _, classes in self._stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        classes = set(values.get("class", "").split())
        if "arithmatex" in classes:
            self.problems.append(f"unrendered formula (an arithmatex <{tag}>)")
        if tag == "merror":
            self.problems.append("a formula the converter could not read (<merror>)")
        self._check_network(tag, values)
        if tag == "img":
            self._check_figure(values)
        if self._children:
            self._children[-1] += 1
        if tag not in {"img", "br", "hr", "meta", "link", "input", "source", "col", "area", "wbr", "embed"}:
            self._stack.append((tag, classes))
            self._children.append(0)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if self._stack and self._stack[-1][0] == tag:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self._stack) - 1, -1, -1):
            if self._stack[depth][0] == tag:
                if tag in _ARITY and self._children[depth] != _ARITY[tag]:
                    self.problems.append(
                        f"a formula the converter misread: <{tag}> with {self._children[depth]} parts "
                        f"instead of {_ARITY[tag]}"
                    )
                del self._stack[depth:]
                del self._children[depth:]
                return

    def handle_data(self, data: str) -> None:
        if not data.strip() or any(self._inside(tag) for tag in _SKIP_TEXT):
            return
        if self._inside("math"):
            current = self._stack[-1][0] if self._stack else ""
            if current in _TOKENS and "\\" in data:
                self.problems.append(f"a TeX command left inside a formula: {data.strip()[:60]!r}")
            return
        found = _TEX_IN_TEXT.search(data)
        if found:
            start = max(0, found.start() - 30)
            self.problems.append(f"unrendered TeX in the text: {data[start : found.end() + 30].strip()!r}")

    def _check_network(self, tag: str, values: dict[str, str]) -> None:
        attribute = _RESOURCE_ATTRIBUTES.get(tag)
        if tag == "link" and set(values.get("rel", "").split()) & {"stylesheet", "preload", "icon", "preconnect"}:
            attribute = "href"
        target = values.get(attribute or "", "")
        if attribute and _NETWORK.match(target):
            self.problems.append(f"<{tag}> loads {target} from the network")

    def _check_figure(self, values: dict[str, str]) -> None:
        src = values.get("src", "")
        path = local_png(src, self.page_url, self.site_dir)
        if path is None:
            return
        drawn, _ = png_size(path)
        style = re.search(r"(?:^|;)\s*(?:max-)?width\s*:\s*(\d+(?:\.\d+)?)px", values.get("style", ""))
        if values.get("width", "").isdigit():
            shown = int(values["width"])
        elif style:
            shown = int(float(style.group(1)))
        elif self._inside_class(WIDE_CLASS):
            shown = drawn
            self.wide.append(f"{src} ({drawn} px)")
        else:
            shown = min(drawn, COLUMN_PX)
        if shown < drawn:
            self.problems.append(
                f"figure {src} is drawn {drawn} px wide but shown {shown} px wide (squeezed to "
                f"{100 * shown / drawn:.0f} %): draw it at most {COLUMN_PX} px wide or let it scroll"
            )


def check_page(html: str, page_url: str, site_dir: Path) -> tuple[list[str], list[str]]:
    """The problems of one built page, and the wide figures it shows in scrolling frames."""
    page = _Page(page_url, site_dir)
    page.feed(html)
    page.close()
    return page.problems, page.wide


def check_stylesheet(css: str) -> list[str]:
    """The rule that keeps a framed figure at its drawn size must be in the site's stylesheet."""
    rule = re.search(r"\.wide-figure\s+img\s*\{([^}]*)\}", css)
    if rule is None or not re.search(r"max-width\s*:\s*none", rule.group(1)):
        return [f"extra.css lacks '.{WIDE_CLASS} img {{ max-width: none }}': framed figures would be squeezed"]
    return []


def check_site(site_dir: Path) -> tuple[list[str], list[str]]:
    """Every problem of the built site as ``page: problem``, and its framed wide figures."""
    problems: list[str] = []
    wide: list[str] = []
    for html_file in sorted(site_dir.rglob("*.html")):
        relative = html_file.relative_to(site_dir).as_posix()
        page_url = relative.removesuffix("index.html")
        page_problems, page_wide = check_page(html_file.read_text(encoding="utf-8"), page_url, site_dir)
        problems += [f"{relative}: {problem}" for problem in dict.fromkeys(page_problems)]
        wide += [f"{relative}: {figure}" for figure in page_wide]
    stylesheet = site_dir / "stylesheets" / "extra.css"
    problems += check_stylesheet(stylesheet.read_text(encoding="utf-8") if stylesheet.is_file() else "")
    return problems, wide


def on_post_build(config: Any) -> None:
    """MkDocs event: check the site just written; a problem fails the build."""
    from mkdocs.exceptions import PluginError

    problems, wide = check_site(Path(config["site_dir"]))
    if wide:
        log.info("figures wider than the %d px text column, shown unscaled in a scrolling frame: %s", COLUMN_PX, wide)
    if problems:
        shown = "\n  ".join(problems[:40])
        more = f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else ""
        raise PluginError(f"the built docs have {len(problems)} problem(s):\n  {shown}{more}")
