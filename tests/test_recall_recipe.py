"""The ``recall-at-k`` recipe on the protocol: a tiny quick run end to end; the full run is slow."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pairloss.models.backbones import build_backbone
from pairloss.recipes import get_recipe, run_experiment
from pairloss.recipes.protocol import RESULTS_KEYS, ExperimentResult
from pairloss.recipes.recall_at_k import CLAIMS, METHODS, SPACES


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one thread avoids waiting on a second, busy core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = {
    "train_classes": 8,
    "validation_classes": 4,
    "test_classes": 8,
    "pretrain_classes": 16,
    "samples_per_class": 4,
    "pretrain_samples_per_class": 3,
    "batch_size": 16,
    "large_batch_size": 32,
    "chunk_size": 16,
    "updates": 6,
    "validate_every": 3,
    "pretrain_updates": 4,
    "pretrain_batch_size": 16,
}


def test_tiny_quick_run_writes_the_protocol_results(tmp_path) -> None:
    result = run_experiment(get_recipe("recall-at-k"), out=tmp_path, quick=True, overrides=TINY)
    assert isinstance(result, ExperimentResult)
    saved = json.loads(result.results_path.read_text())
    assert set(RESULTS_KEYS) <= set(saved) and saved["mode"] == "quick" and saved["seeds"] == [0, 1]
    assert saved["data"]["classes"] == {"fit": 8, "validation": 4, "test": 8, "pretrain": 16}
    assert saved["data"]["fonts"] >= 90
    assert set(saved["tuning"]) == set(SPACES) and {t["trials"] for t in saved["tuning"].values()} == {2}
    for method, entry in saved["tuning"].items():
        assert set(entry["best"]) == set(SPACES[method]) and len(entry["history"]) == 2
    for runs in saved["per_seed"].values():
        assert set(runs) == {m.name for m in METHODS}
        for run in runs.values():
            assert set(run["metrics"]) == {"recall@1", "recall@2", "recall@4", "recall@8", "map@r"}
            assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in run["metrics"].values())
    equal_images = saved["per_seed"]["0"]["RS@k large batch, equal images"]["extra"]["updates"]
    assert equal_images == 3 and saved["per_seed"]["0"]["RS@k large batch"]["extra"]["updates"] <= 6
    assert len(saved["verdicts"]) == 2 * len(CLAIMS)
    assert {v["verdict"] for v in saved["verdicts"]} <= {"held", "not held", "inconclusive"}
    assert "| RS@k beats contrastive | recall@1 |" in result.table_path.read_text()
    assert result.figure_path.stat().st_size > 0
    # the pretrained start is a backbone checkpoint that load_weights reads
    (checkpoint,) = (tmp_path / "recall-at-k" / "cache").glob("pretrained-backbone-*.pt")
    model = build_backbone("glyph_cnn", 64, weights=checkpoint)
    assert torch.equal(model.backbone.state_dict()["features.0.weight"], torch.load(checkpoint)["features.0.weight"])


@pytest.mark.slow
def test_full_reproduction(tmp_path) -> None:
    result = run_experiment(get_recipe("recall-at-k"), out=tmp_path)
    assert isinstance(result, ExperimentResult) and result.mode == "full"
    assert all(entry["recall@1"]["n"] == 5 for entry in result.summary.values())
