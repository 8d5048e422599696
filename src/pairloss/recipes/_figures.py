"""Figure pieces shared by the recipes' ``make_figure``: readable at the docs column width (6.7 in at 100 dpi).

Fonts are at least :data:`FONT` points at the saved resolution; the verdict legend sits above its panel, outside
the data, and long claim labels are wrapped so that the intervals keep most of the width.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["DPI", "FONT", "WIDTH", "stacked", "verdict_panel"]

#: Width (inches) and resolution of a recipe figure: 670 pixels, the docs text column.
WIDTH, DPI = 6.7, 100
#: The smallest font size used (points).
FONT = 9
#: Characters per line of a claim label in the verdicts' panel.
LABEL_CHARS = 40


def stacked(figure: Any, top: float, bottom: float) -> tuple[Any, Any]:
    """Two subfigures of ``figure`` stacked vertically, with heights in the ratio ``top : bottom``."""
    panels = figure.subfigures(2, 1, height_ratios=[top, bottom])
    return panels[0], panels[1]


def verdict_panel(figure: Any, verdicts: Sequence[Mapping[str, Any]], metric: str | None = None) -> Any:
    """Draw the verdicts' forest plot (:func:`pairloss.recipes.report.plot_verdicts`) on ``figure`` (a figure or
    subfigure with a layout engine); returns the axes."""
    from pairloss.recipes.report import plot_verdicts

    ax = figure.add_subplot()
    plot_verdicts(ax, verdicts, metric=metric)
    ax.set_yticks(ax.get_yticks(), [_wrapped(label.get_text()) for label in ax.get_yticklabels()])
    ax.tick_params(labelsize=FONT)
    ax.xaxis.label.set_fontsize(FONT)
    handles, labels = ax.get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=FONT, loc="outside upper center", ncol=3, frameon=False)
    return ax


def _wrapped(label: str) -> str:
    """``label`` on lines of at most :data:`LABEL_CHARS` characters, broken between words only."""
    return textwrap.fill(label, LABEL_CHARS, break_on_hyphens=False, break_long_words=False)
