"""Figure pieces shared by the recipes' ``make_figure``: readable at the docs column width (7 in at 100 dpi).

Fonts are at least :data:`FONT` points at the saved resolution; the verdict legend sits above its panel, outside
the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["DPI", "FONT", "WIDTH", "stacked", "verdict_panel"]

#: Width (inches) and resolution of a recipe figure: 700 pixels, the docs column.
WIDTH, DPI = 7.0, 100
#: The smallest font size used (points).
FONT = 9


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
    ax.tick_params(labelsize=FONT)
    ax.xaxis.label.set_fontsize(FONT)
    ax.legend(fontsize=FONT, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    return ax
