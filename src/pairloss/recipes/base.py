"""Recipes: the shared experiment protocol, and the earlier harness of the recipes not yet moved onto it.

A recipe module defines one module-level ``RECIPE``:

* an :class:`~pairloss.recipes.protocol.Experiment` (the protocol every recipe follows: a validation split,
  equal-budget tuning, paired seeds, verdicts with a 95% CI; see :mod:`pairloss.recipes.protocol` and the
  "Experiment protocol" docs page), run by :func:`~pairloss.recipes.protocol.run_experiment`;
* or, until it is moved onto the protocol, a :class:`Recipe` of the earlier harness below, which runs every
  method with fixed settings and compares means.

:func:`run_recipe` runs either. The earlier harness runs a :class:`Recipe` for ``seeds`` seeds and writes, under
``out/NAME/``:

* ``results.json``: the config, the environment, every finished seed's metrics and the aggregate (mean, std, n);
* ``table.md``: the aggregate as a Markdown table (rows = methods, columns = metrics, ``mean ± std``);
* ``figure.png``: the recipe's own figure.

A run that was interrupted resumes: seeds already in ``results.json`` with the same config are kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pairloss.recipes.protocol import (
    Experiment,
    ExperimentResult,
    OutputFiles,
    environment,
    resolve_config,
    run_experiment,
)
from pairloss.recipes.protocol import aggregate as aggregate_runs
from pairloss.recipes.report import metrics_table as markdown_table
from pairloss.recipes.results_file import read_previous, set_aside
from pairloss.training.reporting import Reporter

__all__ = ["Recipe", "RecipeResult", "SeedResult", "aggregate", "markdown_table", "run_recipe"]

#: Per-seed metrics: ``{row (method): {metric: value}}``.
Metrics = dict[str, dict[str, float]]


@dataclass
class SeedResult:
    """What one seed of a recipe returns: a metrics table and any extra data the figure needs (JSON-able)."""

    metrics: Metrics
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RecipeResult(OutputFiles):
    """Everything a recipe run produced (also the content of ``results.json``)."""

    name: str
    config: dict[str, Any]
    seeds: dict[int, SeedResult]
    summary: dict[str, dict[str, dict[str, float]]]
    out_dir: Path


@dataclass(frozen=True)
class Recipe:
    """One paper's reproduction.

    Attributes:
        name: the CLI name (``pairloss reproduce NAME``).
        title: one line for ``pairloss reproduce --list``.
        paper: the paper reproduced.
        claim: the claim tested, in one sentence.
        config: the full configuration; ``quick`` overrides some keys for ``--quick``.
        run_seed: ``(config, seed, reporter) -> SeedResult``.
        make_figure: ``(result, path) -> None`` writes the PNG.
        verdict: optional ``(result) -> str``: a sentence saying whether the claim held, printed and stored.
    """

    name: str
    title: str
    paper: str
    claim: str
    config: Mapping[str, Any]
    quick: Mapping[str, Any]
    run_seed: Callable[[dict[str, Any], int, Reporter], SeedResult]
    make_figure: Callable[[RecipeResult, Path], None]
    verdict: Callable[[RecipeResult], str] | None = None

    def resolve_config(self, quick: bool, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The configuration of a run: defaults, then the quick overrides, then explicit overrides."""
        config = resolve_config(self.name, self.config, self.quick if quick else {}, overrides)
        config["quick"] = quick
        return config


def aggregate(seeds: Mapping[int, SeedResult]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean, sample standard deviation and count of every (row, metric) over seeds (NaN values are skipped)."""
    return aggregate_runs({str(s): {row: {"metrics": m} for row, m in r.metrics.items()} for s, r in seeds.items()})


def _load_finished(path: Path, config: Mapping[str, Any]) -> dict[int, SeedResult]:
    """The seeds a previous run with the same config finished; a file that cannot be resumed is set aside."""
    saved = read_previous(path)
    if saved is None:
        return {}
    if saved.get("config") != json.loads(json.dumps(config)):
        set_aside(path, "was written with another config")
        return {}
    try:
        return {int(seed): SeedResult(**entry) for seed, entry in dict(saved.get("per_seed", {})).items()}
    except (TypeError, ValueError) as error:
        set_aside(path, f"has a malformed per-seed entry ({error})")
        return {}


def _write(result: RecipeResult, recipe: Recipe, verdict: str | None) -> None:
    payload = {
        "name": recipe.name,
        "title": recipe.title,
        "paper": recipe.paper,
        "claim": recipe.claim,
        "verdict": verdict,
        "config": result.config,
        "environment": environment(),
        "per_seed": {str(s): {"metrics": r.metrics, "extra": r.extra} for s, r in sorted(result.seeds.items())},
        "summary": result.summary,
    }
    tmp = result.results_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    tmp.replace(result.results_path)


def run_recipe(
    recipe: Recipe | Experiment,
    *,
    out: Path | str = "results",
    seeds: int | None = None,
    quick: bool = False,
    overrides: Mapping[str, Any] | None = None,
    reporter: Reporter | None = None,
) -> RecipeResult | ExperimentResult:
    """Run (or resume) a recipe and write results.json, table.md and figure.png under ``out/NAME``.

    An :class:`~pairloss.recipes.protocol.Experiment` runs on the protocol (``seeds`` defaults to its own: 5 in
    full mode); a :class:`Recipe` of the earlier harness runs seeds ``0 .. seeds-1`` (3 by default).
    """
    if isinstance(recipe, Experiment):
        return run_experiment(recipe, out=out, seeds=seeds, quick=quick, overrides=overrides, reporter=reporter)
    return _run_legacy(
        recipe, out=out, seeds=3 if seeds is None else seeds, quick=quick, overrides=overrides, reporter=reporter
    )


def _run_legacy(
    recipe: Recipe,
    *,
    out: Path | str,
    seeds: int,
    quick: bool,
    overrides: Mapping[str, Any] | None,
    reporter: Reporter | None,
) -> RecipeResult:
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    reporter = reporter or Reporter()
    config = recipe.resolve_config(quick, overrides)
    out_dir = Path(out) / recipe.name
    out_dir.mkdir(parents=True, exist_ok=True)
    finished = {s: r for s, r in _load_finished(out_dir / "results.json", config).items() if s < seeds}
    result = RecipeResult(recipe.name, config, finished, aggregate(finished), out_dir)
    todo = [s for s in range(seeds) if s not in finished]
    if finished:
        reporter.log(f"[dim]{recipe.name}: resuming, seeds {sorted(finished)} already finished[/dim]")
    with reporter.session():
        for seed in reporter.track(todo, f"{recipe.name}: seeds", total=len(todo)):
            torch.manual_seed(seed)
            np.random.seed(seed)  # noqa: NPY002  (recipes that draw from the global generator stay seeded)
            result.seeds[seed] = recipe.run_seed(dict(config), seed, reporter)
            result.summary = aggregate(result.seeds)
            _write(result, recipe, None)
    verdict = recipe.verdict(result) if recipe.verdict else None
    _write(result, recipe, verdict)
    table = markdown_table(result.summary)
    if verdict:
        table += f"\n{verdict}\n"
    result.table_path.write_text(table)
    recipe.make_figure(result, result.figure_path)
    return result
