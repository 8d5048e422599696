"""The docs tables and the README's recipes table match the committed results files (``make render-docs``)."""

from __future__ import annotations

from pathlib import Path

from pairloss.recipes.render import check_docs

ROOT = Path(__file__).resolve().parents[1]


def test_generated_docs_match_the_committed_results() -> None:
    stale = check_docs(ROOT)
    assert stale == [], f"out of date (run `make render-docs`): {[str(p.relative_to(ROOT)) for p in stale]}"
