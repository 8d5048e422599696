"""Calibration metrics against hand computations and scikit-learn."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss

from pairloss.metrics import ece, log_loss, pcoc, reliability_curve, reliability_diagram


def test_ece_by_hand():
    p = np.array([0.05, 0.15, 0.12, 0.55, 0.95, 1.0])
    y = np.array([0, 1, 0, 1, 1, 0])
    # 10 bins: [0,.1): {.05|0}; [.1,.2): {.15|1, .12|0}; [.5,.6): {.55|1}; [.9,1]: {.95|1, 1.0|0}
    expected = (1 * 0.05 + 2 * abs(0.135 - 0.5) + 1 * abs(0.55 - 1) + 2 * abs(0.975 - 0.5)) / 6
    assert ece(p, y, n_bins=10) == pytest.approx(expected)
    assert ece(p, y, n_bins=1) == pytest.approx(abs(p.mean() - y.mean()))


def test_reliability_curve_bins():
    curve = reliability_curve([0.05, 0.15, 0.12, 1.0], [0, 1, 0, 1], n_bins=10)
    assert curve.count.tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 1]  # 1.0 falls in the last, closed bin
    assert curve.mean_prob[1] == pytest.approx(0.135)
    assert curve.frac_pos[1] == pytest.approx(0.5)
    assert math.isnan(curve.mean_prob[2])


def test_pcoc_and_log_loss():
    p = np.array([0.2, 0.4, 0.9, 0.1])
    y = np.array([0, 1, 1, 0])
    assert pcoc(p, y) == pytest.approx(1.6 / 2)
    assert log_loss(p, y) == pytest.approx(sk_log_loss(y, p))
    with pytest.warns(RuntimeWarning, match="no click"):
        assert math.isnan(pcoc(p, np.zeros(4)))
    assert math.isfinite(log_loss([0.0, 1.0], [1, 0]))


def test_reliability_diagram_draws(tmp_path):
    rng = np.random.default_rng(0)
    p = rng.uniform(size=500)
    y = (rng.uniform(size=500) < p).astype(float)
    ax = reliability_diagram({"model": reliability_curve(p, y)})
    ax.figure.savefig(tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 0
    assert len(ax.lines) == 2


@pytest.mark.parametrize(
    ("p", "y", "message"),
    [
        ([0.1, 1.2], [0, 1], r"in \[0, 1\]"),
        ([0.1, np.nan], [0, 1], "finite"),
        ([0.1, 0.2], [0, 2], "binary"),
        ([0.1], [0, 1], "same length"),
        ([], [], "empty"),
    ],
)
def test_calibration_errors(p, y, message):
    with pytest.raises(ValueError, match=message):
        ece(p, y)
