"""The ce-vs-pairwise recipe: Boudiaf et al.'s recipe pieces from their formulas, and a quick run on the protocol."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from pairloss.recipes.ce_vs_pairwise import (
    CLAIMS,
    METHODS,
    RECIPE,
    GlyphEmbedder,
    _bound_metrics,
    _no_bias_decay,
    boudiaf_label_smoothing,
    warm_cosine,
)
from pairloss.recipes.protocol import run_experiment


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("n_classes", [2, 5, 300])
def test_label_smoothing_gives_the_authors_target(n_classes: int) -> None:
    """Their SmoothCrossEntropy: KL to a target with 1 − ε on the class and ε/(C − 1) on every other class."""
    torch.manual_seed(0)
    logits, labels, eps = torch.randn(7, n_classes, dtype=torch.float64), torch.randint(0, n_classes, (7,)), 0.1
    target = torch.full_like(logits, eps / (n_classes - 1))
    target[torch.arange(7), labels] = 1 - eps
    theirs = -(target * torch.log_softmax(logits, 1)).sum(1).mean()  # KL up to the target's (constant) entropy
    ours = F.cross_entropy(logits, labels, label_smoothing=boudiaf_label_smoothing(eps, n_classes))
    torch.testing.assert_close(ours, theirs)
    with pytest.raises(ValueError, match="two classes"):
        boudiaf_label_smoothing(0.1, 1)


def test_warm_cosine_is_their_schedule() -> None:
    factor = warm_cosine(1000, 100)
    assert factor(0) == pytest.approx(0.01) and factor(49) == pytest.approx(0.5)
    assert factor(100) == pytest.approx((1 + math.cos(math.pi * 0.1)) / 2)  # warm-up over: the cosine is lower
    assert factor(500) == pytest.approx(0.5) and factor(999) == pytest.approx((1 + math.cos(math.pi * 0.999)) / 2)
    assert all(factor(i) >= factor(i + 1) for i in range(100, 999))


def test_embedder_feature_batch_norm_and_no_bias_decay() -> None:
    with_bn, without = GlyphEmbedder(8, feature_bn=True), GlyphEmbedder(8, feature_bn=False)
    assert isinstance(with_bn.norm, torch.nn.BatchNorm1d) and not with_bn.norm.affine
    assert isinstance(without.norm, torch.nn.Identity)
    x = torch.rand(6, 1, 16, 16)
    assert with_bn(x).shape == without(x).shape == (6, 8)
    decayed, free = _no_bias_decay([with_bn], 5e-4)
    assert decayed["weight_decay"] == 5e-4 and free["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim == 1 for p in free["params"])
    assert len(decayed["params"]) + len(free["params"]) == len(list(with_bn.parameters()))


def test_bound_metrics_count_violations() -> None:
    trace = [[0, 2.0, 1.5, 1.0], [1, 1.0, 1.5, 0.5], [2, 0.4, 1.5, 0.5]]  # [step, CE, PCE, PCE − gap]
    metrics = _bound_metrics(trace)
    assert metrics["bound violations"] == 1 and metrics["bound checks"] == 3
    assert metrics["CE ≥ PCE (share of checks)"] == pytest.approx(1 / 3)


def test_methods_and_claims() -> None:
    names = {m.name for m in METHODS}
    assert {"cross-entropy", "contrastive", "multi-similarity", "triplet", "raw pixels"} <= names
    tuned = {m.name: m for m in METHODS if m.space}
    assert set(tuned) == {"cross-entropy", "contrastive", "multi-similarity", "triplet"}
    assert all("lr" in m.space for m in tuned.values())
    ablations = [m for m in METHODS if m.tuned_as == "cross-entropy"]
    assert {m.settings["label_smoothing"] for m in ablations} == {0.0, 0.1}
    assert all(c.metrics == ("recall@1", "map@r") for c in CLAIMS)


TINY = {"train_classes": 12, "validation_classes": 6, "test_classes": 12, "samples_per_class": 6, "updates": 10,
        "validate_every": 5, "warmup": 3, "batch_size": 24, "bound_every": 2}  # fmt: skip


def test_quick_run_on_the_protocol(tmp_path) -> None:
    result = run_experiment(RECIPE, out=tmp_path, seeds=2, quick=True, overrides=TINY)
    for path in (result.results_path, result.table_path, result.figure_path):
        assert path.exists() and path.stat().st_size > 0
    saved = json.loads(result.results_path.read_text())
    assert saved["mode"] == "quick" and saved["data"]["classes"] == {"fit": 12, "validation": 6, "test": 12}
    assert set(saved["tuning"]) == {"cross-entropy", "contrastive", "multi-similarity", "triplet"}
    assert all(len(entry["history"]) == 2 for entry in saved["tuning"].values())
    assert len(saved["verdicts"]) == 2 * len(CLAIMS)
    for seed in ("0", "1"):
        runs = saved["per_seed"][seed]
        assert set(runs) == {m.name for m in METHODS}
        for name, run in runs.items():
            assert all(math.isfinite(v) for v in run["metrics"].values()), name
            assert 0 <= run["metrics"]["recall@1"] <= 1
        for name in ("cross-entropy", "cross-entropy, no label smoothing", "cross-entropy, no feature batch-norm"):
            metrics = runs[name]["metrics"]
            assert metrics["bound violations"] == 0 and metrics["bound checks"] == 5
        assert "bound violations" not in runs["triplet"]["metrics"]
    # the same seed gives every method the same data and start: raw pixels do not depend on the seed
    assert saved["per_seed"]["0"]["raw pixels"] == saved["per_seed"]["1"]["raw pixels"]


@pytest.mark.slow
def test_full_run(tmp_path) -> None:
    result = run_experiment(RECIPE, out=tmp_path)
    assert result.mode == "full" and result.summary["cross-entropy"]["map@r"]["n"] == 5
    assert all(result.summary[name]["bound violations"]["mean"] == 0 for name in result.summary if "cross" in name)
    assert result.summary["cross-entropy"]["map@r"]["mean"] > result.summary["raw pixels"]["map@r"]["mean"]
