"""The measured parts of the docs, generated from the committed results of full runs.

For every recipe on the shared protocol (an :class:`~pairloss.recipes.protocol.Experiment`), the full run's
``results.json`` and ``figure.png`` are committed under ``docs/results/NAME/``. From them this module writes

* the block between :data:`BEGIN` and :data:`END` in ``docs/recipes/NAME.md``: the run line (mode, seeds, wall
  time), the figure, the metrics table, the verdicts and the tuning;
* the recipes table between :data:`README_BEGIN` and :data:`README_END` in ``README.md``: one row per recipe with
  its mode, seeds, wall time and verdict counts.

Commands (from the repository root)::

    python -m pairloss.recipes.render                  # rewrite the generated blocks
    python -m pairloss.recipes.render --check          # exit 1 if a block differs from its results file
    python -m pairloss.recipes.render --publish results/recall-at-k   # copy a full run into docs/results, render

``make render-docs`` and ``pairloss reproduce --render-docs`` run the first; the test suite runs the check.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pairloss.recipes.protocol import MIN_FULL_SEEDS, Experiment
from pairloss.recipes.report import (
    format_duration,
    metrics_table,
    run_line,
    tuning_table,
    verdict_counts,
    verdict_table,
)

__all__ = [
    "BEGIN",
    "END",
    "README_BEGIN",
    "README_END",
    "check_docs",
    "page_block",
    "publish",
    "readme_table",
    "render_docs",
]

BEGIN = "<!-- BEGIN GENERATED RESULTS: written by `make render-docs` from docs/results/{name}/results.json -->"
END = "<!-- END GENERATED RESULTS -->"
README_BEGIN = "<!-- BEGIN GENERATED RECIPES TABLE: written by `make render-docs` from docs/results/*/results.json -->"
README_END = "<!-- END GENERATED RECIPES TABLE -->"


def _load(path: Path) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(path.read_text())
    return payload


def _selected(summary: Mapping[str, Mapping[str, Any]], metrics: Sequence[str]) -> dict[str, dict[str, Any]]:
    return {method: {m: row[m] for m in metrics if m in row} for method, row in summary.items()}


def page_block(name: str, payload: Mapping[str, Any] | None, tables: Sequence[tuple[str, Sequence[str]]] = ()) -> str:
    """The generated block of recipe ``name``'s page (markers included) for its results ``payload``.

    ``tables`` (the experiment's :attr:`~pairloss.recipes.protocol.Experiment.tables`) splits the test metrics into
    titled tables of the given columns; without it, one table holds every metric.
    """
    lines = [BEGIN.format(name=name), ""]
    if payload is None:
        lines += [
            f"No full run is committed yet: `pairloss reproduce {name} --publish` measures it and writes this section."
        ]
    else:
        objective = str(payload.get("objective", "validation score"))
        tuned = f"every method tuned on the {objective}" if payload.get("tuning") else "no method tuned"
        lines += [
            run_line(payload),
            "",
            f"![{payload['title']}](../results/{name}/figure.png)",
            "",
            f"**Test metrics** (mean ± std over seeds; {tuned}):",
            "",
        ]
        if tables:
            for title, metrics in tables:
                lines += [f"*{title}*", "", metrics_table(_selected(payload["summary"], metrics)).rstrip(), ""]
        else:
            lines += [metrics_table(payload["summary"]).rstrip(), ""]
        lines += [
            "**Verdicts**: mean paired difference over seeds (positive favours the claim), its 95% t interval, and",
            "**held** (interval above zero), **not held** (below zero) or **inconclusive** (contains zero).",
            "",
            verdict_table(payload["verdicts"]).rstrip(),
            "",
        ]
        if payload.get("tuning"):
            lines += [
                "**Tuning** (seeded Optuna TPE on the validation split, the same number of trials per tuned method):",
                "",
                tuning_table(payload["tuning"], objective).rstrip(),
            ]
        else:
            lines.append("**Tuning**: none; no method of this recipe has a setting searched on the validation split.")
    lines += ["", END]
    return "\n".join(lines)


def _authors(paper: str) -> str:
    if "et al." in paper:
        return paper[: paper.index("et al.") + len("et al.")]
    authors = paper.split(". ")[0]
    names = [a.strip() for a in authors.split(",")]
    return f"{names[0]} et al." if len(names) > 3 else authors


def readme_table(recipes: Mapping[str, Experiment], results_root: Path) -> str:
    """The README's recipes table (markers included): one row per recipe, from the committed results."""
    lines = [
        README_BEGIN,
        "",
        "| recipe | paper | claim tested | run | verdicts |",
        "|---|---|---|---|---|",
    ]
    for name, recipe in recipes.items():
        page = f"[`{name}`](docs/recipes/{name}.md)"
        head = f"| {page} | {_authors(recipe.paper)} | {recipe.claim.rstrip('.')} |"
        path = results_root / name / "results.json"
        if not path.exists():
            lines.append(f"{head} no full run committed yet | – |")
        else:
            payload = _load(path)
            run = (
                f"{payload['mode']} · {len(payload['seeds'])} seeds · {format_duration(float(payload['wall_seconds']))}"
            )
            lines.append(f"{head} {run} | {verdict_counts(payload['verdicts'])} |")
    lines += ["", README_END]
    return "\n".join(lines)


def _replace_block(text: str, begin: str, end: str, block: str, where: Path) -> str:
    start = text.find(begin)
    stop = text.find(end, start if start >= 0 else 0)
    if start < 0 or stop < 0:
        raise ValueError(f"{where} has no generated block: add the lines\n{begin}\n{end}")
    return text[:start] + block + text[stop + len(end) :]


def _documents(root: Path, recipes: Mapping[str, Experiment] | None) -> dict[Path, str]:
    """Every generated document's path and its expected content."""
    if recipes is None:
        from pairloss.recipes import all_recipes

        recipes = all_recipes()
    results_root = root / "docs" / "results"
    documents: dict[Path, str] = {}
    for name, recipe in recipes.items():
        page = root / "docs" / "recipes" / f"{name}.md"
        path = results_root / name / "results.json"
        payload = _load(path) if path.exists() else None
        if payload is not None:
            _check_publishable(payload, path)
        text = page.read_text() if page.exists() else f"# `pairloss reproduce {name}`\n\n{BEGIN}\n{END}\n"
        block = page_block(name, payload, recipe.tables)
        documents[page] = _replace_block(text, BEGIN.format(name=name), END, block, page)
    readme = root / "README.md"
    documents[readme] = _replace_block(
        readme.read_text(), README_BEGIN, README_END, readme_table(recipes, results_root), readme
    )
    return documents


def _check_publishable(payload: Mapping[str, Any], where: Path) -> None:
    if payload.get("mode") != "full":
        raise ValueError(f"{where} is a {payload.get('mode')!r} run: only full runs are published")
    if len(payload.get("seeds", [])) < MIN_FULL_SEEDS:
        raise ValueError(f"{where} has {len(payload.get('seeds', []))} seeds; a full run has >= {MIN_FULL_SEEDS}")


def render_docs(root: Path | str = ".", recipes: Mapping[str, Experiment] | None = None) -> list[Path]:
    """Rewrite every generated block under ``root`` (a repository checkout); returns the files that changed.

    ``recipes`` defaults to every recipe of the package (:func:`pairloss.recipes.all_recipes`).
    """
    changed = []
    for path, content in _documents(Path(root), recipes).items():
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
            changed.append(path)
    return changed


def check_docs(root: Path | str = ".", recipes: Mapping[str, Experiment] | None = None) -> list[Path]:
    """The generated documents under ``root`` that differ from what their results files give (empty: all fine)."""
    documents = _documents(Path(root), recipes)
    return [p for p, content in documents.items() if not p.exists() or p.read_text() != content]


def publish(run_dir: Path | str, root: Path | str = ".", recipes: Mapping[str, Experiment] | None = None) -> list[Path]:
    """Copy a finished full run (``run_dir`` holding ``results.json`` and ``figure.png``) into ``docs/results``
    and regenerate the docs; returns the files that changed."""
    run_dir, root = Path(run_dir), Path(root)
    results = run_dir / "results.json"
    if not results.exists():
        raise ValueError(f"{results} does not exist: run the recipe first")
    payload = _load(results)
    _check_publishable(payload, results)
    methods = set(payload["methods"])
    if any(set(payload["per_seed"].get(str(seed), {})) != methods for seed in payload["seeds"]):
        raise ValueError(f"{results} is not finished: every seed must have every method")
    target = root / "docs" / "results" / str(payload["name"])
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(results, target / "results.json")
    shutil.copyfile(run_dir / "figure.png", target / "figure.png")
    return [target / "results.json", target / "figure.png", *render_docs(root, recipes)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository checkout (default: .)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated block is out of date")
    parser.add_argument("--publish", type=Path, help="a finished full run's folder to copy into docs/results")
    args = parser.parse_args(argv)
    if args.check:
        stale = check_docs(args.root)
        for path in stale:
            print(f"out of date: {path} (run `make render-docs`)", file=sys.stderr)
        return 1 if stale else 0
    changed = publish(args.publish, args.root) if args.publish else render_docs(args.root)
    for path in changed:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
