"""One reproduction recipe per paper. Each module in this package defines a module-level ``RECIPE``, an
:class:`Experiment` run by :func:`run_experiment`.

The shared experiment protocol lives beside them: :mod:`~pairloss.recipes.protocol` (the :class:`Experiment`
and its runner), :mod:`~pairloss.recipes.stats` (paired differences, 95% CIs, verdicts),
:mod:`~pairloss.recipes.tuning` (equal-budget Optuna search), :mod:`~pairloss.recipes.report` (tables and the
verdict plot), :mod:`~pairloss.recipes.render` (the docs generated from committed results) and
:mod:`~pairloss.recipes.base` (what several recipes share beyond the protocol).
"""

from __future__ import annotations

import importlib
import pkgutil

from pairloss.recipes.protocol import (
    Claim,
    Experiment,
    ExperimentResult,
    Method,
    PrepareContext,
    RunContext,
    RunResult,
    Splits,
    run_experiment,
)

__all__ = [
    "Claim",
    "Experiment",
    "ExperimentResult",
    "Method",
    "PrepareContext",
    "RunContext",
    "RunResult",
    "Splits",
    "all_recipes",
    "get_recipe",
    "run_experiment",
]

#: Modules of this package that hold the protocol, not a recipe.
_INFRASTRUCTURE = {"base", "protocol", "render", "report", "results_file", "stats", "tuning"}


def all_recipes() -> dict[str, Experiment]:
    """Every recipe, by name, discovered from the modules of this package."""
    found: dict[str, Experiment] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _INFRASTRUCTURE:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        recipe = getattr(module, "RECIPE", None)
        if isinstance(recipe, Experiment):
            found[recipe.name] = recipe
    return dict(sorted(found.items()))


def get_recipe(name: str) -> Experiment:
    """The recipe called ``name``; ``ValueError`` listing the known names otherwise."""
    recipes = all_recipes()
    if name not in recipes:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(recipes) or 'none'}")
    return recipes[name]
