"""The ``recall-at-k`` recipe: a tiny run writes its three files with finite metrics; the full run is slow."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pairloss.recipes import get_recipe, run_recipe
from pairloss.recipes.recall_at_k import RUNS
from pairloss.training.reporting import Reporter


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one thread avoids waiting on a second, busy core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = {
    "glyph_train_classes": 6,
    "glyph_test_classes": 6,
    "glyph_pretrain_classes": 6,
    "glyph_samples_per_class": 4,
    "pretrain_samples_per_class": 3,
    "digits_train_per_class": 12,
    "epochs": 1,
    "pretrain_epochs": 1,
    "chunk_size": 16,
    "rows": ["cross-entropy b=256", "RS@k b=64", "RS@k b=full", "RS@k + SiMix + pretrained b=full"],
}


def test_tiny_run_writes_results_table_and_figure(tmp_path) -> None:
    recipe = get_recipe("recall-at-k")
    result = run_recipe(recipe, out=tmp_path, seeds=1, quick=True, overrides=TINY, reporter=Reporter.silent())
    for path in (result.results_path, result.table_path, result.figure_path):
        assert path.exists() and path.stat().st_size > 0
    saved = json.loads(result.results_path.read_text())
    rows = saved["per_seed"]["0"]["metrics"]
    assert set(rows) == {f"{d} · {r}" for d in ("digits", "glyphs") for r in TINY["rows"]}
    assert set(TINY["rows"]) <= set(RUNS)
    for metrics in rows.values():
        assert set(metrics) == {"recall@1", "recall@2", "recall@4", "recall@8", "map@r"}
        assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in metrics.values())
    assert "larger batches help RS@k" in saved["verdict"] and "SiMix helps" in saved["verdict"]
    assert "| digits · RS@k b=full |" in result.table_path.read_text()


@pytest.mark.slow
def test_full_reproduction(tmp_path) -> None:
    result = run_recipe(get_recipe("recall-at-k"), out=tmp_path, seeds=3)
    assert all(entry["recall@1"]["n"] == 3 for entry in result.summary.values())
