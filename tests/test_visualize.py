"""The pair-weight pictures: the curves follow the losses' definitions, and the figure is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pairloss
from pairloss.app.visualize import metric_pair_weights, plot_pair_weights, ranking_pair_weights


def test_contrastive_weights_a_negative_only_inside_its_margin() -> None:
    # LpDistance on unit vectors: d = sqrt(2 - 2 s) < neg_margin  <=>  s > 1 - margin² / 2
    similarity, weight = metric_pair_weights(pairloss.ContrastiveLoss(neg_margin=1.0), points=101)
    assert np.all(weight[similarity < 0.45] < 1e-12)
    assert np.all(weight[(similarity > 0.55) & (similarity < 0.95)] > 0)


def test_ranknet_weight_is_the_logistic_derivative() -> None:
    gaps, weight = ranking_pair_weights(pairloss.RankNetLoss(), points=41)
    np.testing.assert_allclose(weight, 1 / (1 + np.exp(gaps)), rtol=1e-6, atol=1e-9)


def test_the_figure_is_written(tmp_path: Path) -> None:
    path = tmp_path / "weights.png"
    plot_pair_weights({"RankNet": ranking_pair_weights(pairloss.RankNetLoss(), points=11)}, path, "Δ", "t")
    assert path.stat().st_size > 1000


def test_positive_similarity_must_be_inside_the_interval() -> None:
    with pytest.raises(ValueError, match="positive_similarity"):
        metric_pair_weights(pairloss.ContrastiveLoss(), positive_similarity=1.0)


def test_the_weight_is_the_backward_gradient_not_the_slope_of_the_value() -> None:
    def value_without_gradient(embeddings, labels, indices_tuple=None, ref_emb=None, ref_labels=None):  # type: ignore[no-untyped-def]
        # the value moves with the negative, but the loss's backward treats it as a constant (as circle's weights)
        return (ref_emb[1, 1] ** 2).detach() + 0 * ref_emb.sum()

    _, weight = metric_pair_weights(value_without_gradient, points=21)
    assert np.all(weight == 0)


def test_coinciding_curves_are_drawn_once_under_a_joint_label(tmp_path: Path) -> None:
    from pairloss.app.visualize import _merged

    ntxent = metric_pair_weights(pairloss.NTXentLoss(temperature=0.1), points=41)
    supcon = metric_pair_weights(pairloss.SupConLoss(temperature=0.1), points=41)
    contrastive = metric_pair_weights(pairloss.ContrastiveLoss(), points=41)
    merged = _merged({"NT-Xent": ntxent, "contrastive": contrastive, "SupCon": supcon})
    assert list(merged) == ["NT-Xent = SupCon", "contrastive"]
    assert merged["contrastive"][1].max() == 1.0


def test_the_docs_figures_are_written(tmp_path: Path) -> None:
    from pairloss.app.visualize import write_pair_weight_figures

    written = write_pair_weight_figures(tmp_path)
    assert [p.name for p in written] == ["pair-weights-metric.png", "pair-weights-ranking.png"]
    assert all(p.stat().st_size > 10_000 for p in written)
