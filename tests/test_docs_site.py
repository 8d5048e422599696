"""The docs build's own checks (``mkdocs_hooks/``): formulas become MathML, wide figures keep their size, and the
check of the built site fails on unrendered math, network resources and squeezed figures.

``make docs`` runs the hooks on the real site; these tests feed them small pages and images so that each rule is
shown to fire.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from docs_check import check_page, check_stylesheet
from docs_figures import COLUMN_PX, local_png, png_size, wrap_wide_figures
from docs_math import render_math, to_mathml

ROOT = Path(__file__).resolve().parents[1]


def _png(path: Path, width: int, height: int = 10) -> Path:
    """A valid grey PNG of the given size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


# ---------------------------------------------------------------------------------------------------- math


def test_inline_and_display_formulas_become_mathml() -> None:
    page = (
        '<p>with <span class="arithmatex">\\(s_{ij} &lt; 1\\)</span> and</p>'
        '<div class="arithmatex">\\[L = \\sum_i \\frac{1}{n}\\]</div>'
    )
    html = render_math(page)
    assert "arithmatex" not in html and "\\(" not in html
    assert '<math alttext="s_{ij} &lt; 1" xmlns' in html and 'display="inline"' in html
    assert '<div class="math-display"><math alttext="L = \\sum_i \\frac{1}{n}"' in html and 'display="block"' in html
    assert check_page(html, "", ROOT)[0] == []


@pytest.mark.parametrize(
    ("tex", "expected"),
    [
        (r"\big\lVert x \big\rVert_1", "‖"),
        (r"\Big\lvert x \Big\rvert", "|"),
        (r"\bigl\langle a, b \bigr\rangle", "⟨"),
        (r"\texttt{smooth\_loss}", "smooth_loss"),
    ],
)
def test_forms_the_converter_does_not_read_are_rewritten(tex: str, expected: str) -> None:
    mathml = to_mathml(tex, display=False)
    assert expected in mathml
    assert check_page(mathml, "", ROOT)[0] == [], mathml


def test_a_formula_that_cannot_be_read_names_the_page() -> None:
    with pytest.raises(ValueError, match=r"ranking\.md: cannot render the formula"):
        render_math('<span class="arithmatex">\\(x^{\\)</span>', "ranking.md")


@pytest.mark.parametrize(
    ("html", "problem"),
    [
        ('<span class="arithmatex">\\(x\\)</span>', "unrendered formula"),
        ("<p>the loss \\(L = \\sum_i x_i\\) is</p>", "unrendered TeX in the text"),
        ("<p>$$L = 1$$</p>", "unrendered TeX"),
        ("<p>so \\alpha grows</p>", "unrendered TeX"),
        ("<p>a kernel $K = $ (current P)</p>", "unrendered TeX"),
        ("<math><mo>\\lVert</mo><mi>x</mi></math>", "TeX command left inside a formula"),
        ("<math><merror><mtext>?</mtext></merror></math>", "could not read"),
        (to_mathml(r"\frac{1}", display=False), "<mfrac> with 1 parts instead of 2"),
        ('<script src="https://cdn.example.org/mathjax.js"></script>', "from the network"),
        ('<link rel="stylesheet" href="//fonts.example.org/css">', "from the network"),
    ],
)
def test_the_site_check_finds(html: str, problem: str) -> None:
    problems, _ = check_page(f"<html><body>{html}</body></html>", "", ROOT)
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize(
    "html",
    [
        "<pre><code>loss = f(x)  # \\(not math\\)</code></pre>",
        "<p>see <code>\\alpha</code> and <a href='https://example.org'>a link</a></p>",
        '<script src="../assets/search.js"></script>',
        "<p>a price of $5 and $6</p>",
    ],
)
def test_the_site_check_leaves_alone(html: str) -> None:
    assert check_page(f"<html><body>{html}</body></html>", "", ROOT)[0] == []


# -------------------------------------------------------------------------------------------------- figures


def test_png_size_reads_the_header(tmp_path: Path) -> None:
    assert png_size(_png(tmp_path / "a.png", 123, 45)) == (123, 45)
    (tmp_path / "b.png").write_bytes(b"GIF89a....")
    with pytest.raises(ValueError, match="not a PNG"):
        png_size(tmp_path / "b.png")


def test_image_paths_resolve_from_the_page_url(tmp_path: Path) -> None:
    figure = _png(tmp_path / "figures" / "f.png", 10)
    assert local_png("../../figures/f.png", "recipes/m3g/", tmp_path) == figure
    assert local_png("figures/f.png", "", tmp_path) == figure
    assert local_png("https://example.org/f.png", "", tmp_path) is None
    assert local_png("../figures/f.svg", "x/", tmp_path) is None


def test_a_wide_figure_is_framed_and_a_narrow_one_is_not(tmp_path: Path) -> None:
    _png(tmp_path / "figures" / "wide.png", COLUMN_PX + 1)
    _png(tmp_path / "figures" / "narrow.png", COLUMN_PX)
    page = '<p><img alt="w" src="../figures/wide.png" /></p><p><img alt="n" src="../figures/narrow.png" /></p>'
    html = wrap_wide_figures(page, "recipes/", tmp_path)
    assert html.count('class="wide-figure"') == 1
    assert (
        '<span class="wide-figure" tabindex="0" role="group" aria-label="figure (scrolls sideways)"><img alt="w"'
        in html
    )
    assert 'href="../figures/wide.png">open the figure at full size</a>' in html
    problems, wide = check_page(html, "recipes/", tmp_path)
    assert problems == [] and wide == [f"../figures/wide.png ({COLUMN_PX + 1} px)"]


@pytest.mark.parametrize(
    ("img", "shown"),
    [
        ('<img src="figures/f.png">', COLUMN_PX),
        ('<img src="figures/f.png" width="500">', 500),
        ('<span class="wide-figure"><img src="figures/f.png" style="width: 400px"></span>', 400),
    ],
)
def test_a_squeezed_figure_fails_the_check(tmp_path: Path, img: str, shown: int) -> None:
    _png(tmp_path / "figures" / "f.png", 1360)
    problems, _ = check_page(img, "", tmp_path)
    assert problems == [
        f"figure figures/f.png is drawn 1360 px wide but shown {shown} px wide (squeezed to "
        f"{100 * shown / 1360:.0f} %): draw it at most {COLUMN_PX} px wide or let it scroll"
    ]


def test_the_stylesheet_keeps_framed_figures_unscaled() -> None:
    assert check_stylesheet((ROOT / "docs" / "stylesheets" / "extra.css").read_text()) == []
    assert check_stylesheet(".wide-figure img { max-width: 100%; }") != []
    assert check_stylesheet("") != []


def test_the_docs_figures_are_readable_at_their_size() -> None:
    # the pictures the docs pages show, except the recipes' own, fit the text column unscaled
    for name in ("pair-weights-metric.png", "pair-weights-ranking.png"):
        assert png_size(ROOT / "docs" / "figures" / name)[0] <= COLUMN_PX
