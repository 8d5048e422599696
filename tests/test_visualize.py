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
