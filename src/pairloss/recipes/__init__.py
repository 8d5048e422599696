"""One reproduction recipe per paper. Each module in this package defines a module-level ``RECIPE``."""

from __future__ import annotations

import importlib
import pkgutil

from pairloss.recipes.base import Recipe, RecipeResult, SeedResult, run_recipe

__all__ = ["Recipe", "RecipeResult", "SeedResult", "all_recipes", "get_recipe", "run_recipe"]


def all_recipes() -> dict[str, Recipe]:
    """Every recipe, by name, discovered from the modules of this package."""
    found: dict[str, Recipe] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        recipe = getattr(module, "RECIPE", None)
        if isinstance(recipe, Recipe):
            found[recipe.name] = recipe
    return dict(sorted(found.items()))


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; ``ValueError`` listing the known names otherwise."""
    recipes = all_recipes()
    if name not in recipes:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(recipes) or 'none'}")
    return recipes[name]
