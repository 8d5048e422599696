"""The docs tables and the README's recipes table match the committed results files (``make render-docs``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pairloss.recipes.render import check_docs

ROOT = Path(__file__).resolve().parents[1]


def test_generated_docs_match_the_committed_results() -> None:
    stale = check_docs(ROOT)
    assert stale == [], f"out of date (run `make render-docs`): {[str(p.relative_to(ROOT)) for p in stale]}"


def _payload(summary: dict[str, Any]) -> dict[str, Any]:
    """A minimal full-run results payload with ``summary`` and no verdicts or tuning."""
    return {
        "mode": "full",
        "seeds": [0, 1, 2, 3, 4],
        "wall_seconds": 60.0,
        "environment": {},
        "title": "t",
        "objective": "validation a",
        "summary": summary,
        "verdicts": [],
        "tuning": {},
        "config": {"trials": 1},
    }


def test_page_block_splits_the_metrics_into_the_experiments_tables() -> None:
    from pairloss.recipes.render import page_block

    summary = {m: {k: {"mean": v, "std": 0.1, "n": 5} for k, v in (("a", 1.0), ("b", 2.0), ("c", 3.0))} for m in "xy"}
    payload = _payload(summary)
    one = page_block("demo", payload)
    assert "| method | a | b | c |" in one
    split = page_block("demo", payload, (("first", ("a",)), ("second", ("c", "b"))))
    assert "*first*" in split and "| method | a |" in split and "| method | c | b |" in split
    assert "| method | a | b | c |" not in split


def test_an_experiment_without_tuning_is_not_described_as_tuned() -> None:
    from pairloss.recipes.render import page_block
    from pairloss.recipes.report import results_markdown

    payload = _payload({m: {"a": {"mean": 1.0, "std": 0.1, "n": 5}} for m in "xy"})
    for text in (page_block("demo", payload), results_markdown(payload)):
        assert "no method tuned" in text
        assert "tuned on the validation a" not in text and "tuning trials per tuned method" not in text
        assert "| method | trials |" not in text
    space = {"lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}}
    payload["tuning"] = {"x": {"trials": 1, "space": space, "best": {"lr": 0.01}, "best_value": 0.5}}
    for text in (page_block("demo", payload), results_markdown(payload)):
        assert "tuned on the validation a" in text and "1 tuning trials per tuned method" in text
        assert "| method | trials |" in text and "lr = 0.01" in text
