"""``pairloss demo``: the naive N×N references equal the library's losses; a tiny demo writes its results."""

from __future__ import annotations

import json

import pytest
import torch

import pairloss
from pairloss.app.demo import DEMO_LOSSES, naive_contrastive_loss, naive_recall_at_k_loss, run_demo


@pytest.mark.parametrize(("name", "naive"), [("contrastive", naive_contrastive_loss), ("rs@k", naive_recall_at_k_loss)])
def test_naive_references_equal_the_library(name, naive) -> None:
    embeddings = torch.randn(48, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.arange(12).repeat_interleave(4)
    ours = DEMO_LOSSES[name](12, 6)(embeddings, labels)
    theirs = naive(embeddings, labels)
    assert torch.allclose(ours, theirs)
    (g_ours,) = torch.autograd.grad(ours, embeddings)
    (g_theirs,) = torch.autograd.grad(theirs, embeddings)
    assert torch.allclose(g_ours, g_theirs, atol=1e-12)


def test_naive_recall_at_k_counts_ranks_from_the_formula() -> None:
    # three samples of class 0 and one of class 1, on a line: query 0's positives are 1 (closest) and 2
    embeddings = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.8, 0.6]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1])
    expected = pairloss.RecallAtKSurrogateLoss(k=(1, 2), tau2=1e-3)(embeddings, labels)
    assert torch.allclose(naive_recall_at_k_loss(embeddings, labels, k=(1, 2), tau2=1e-3), expected)


def test_tiny_demo_writes_results_and_figure(tmp_path) -> None:
    # one loss keeps the test short: each speed case starts a fresh interpreter
    results = run_demo(
        ["rs@k"], seeds=2, updates=2, train_classes=6, test_classes=5, samples=4, speed_batch=32, out=tmp_path
    )
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert set(saved["summary"]) == {"raw pixels (no training)", "rs@k"}
    assert len(saved["per_seed"]["rs@k"]) == 2 and saved["summary"]["rs@k"]["map@r"]["std"] >= 0
    cases = saved["speed_and_memory"]["cases"]
    ours, naive = cases["rs@k"]["pairloss"], cases["rs@k"]["naive N×N"]
    assert ours["value"] == pytest.approx(naive["value"], rel=1e-5) and ours["seconds"] > 0
    assert ours["peak_bytes"] is None or ours["peak_bytes"] >= 0
    assert (tmp_path / "demo" / "figure.png").stat().st_size > 0
    assert results["summary"] == saved["summary"]
    with pytest.raises(ValueError, match=r"unknown loss .nope."):
        run_demo(["nope"], out=tmp_path)
