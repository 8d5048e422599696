"""Invariants of the kidney-allocation simulator (KAS response, pre-KAS score) and of the top-N metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from pairloss.data.organ import (
    CPRA_POINTS,
    FEATURE_NAMES,
    LONGEVITY_TIER,
    cpra_points,
    grade_within_lists,
    simulate_organ_matching,
    top_n_relevant,
)
from pairloss.metrics.topn import kendall_tau, precision_at_n, recall_at_n, top_n_hits


@pytest.fixture(scope="module")
def data():
    return simulate_organ_matching(120, 30, seed=3)


def _col(data, name: str) -> torch.Tensor:
    return data.features[..., FEATURE_NAMES.index(name)]


def test_seeded_and_deterministic(data) -> None:
    again = simulate_organ_matching(120, 30, seed=3)
    other = simulate_organ_matching(120, 30, seed=4)
    for field in ("features", "current_score", "response", "observed_response", "observed"):
        assert torch.equal(getattr(data, field), getattr(again, field))
    assert not torch.equal(data.response, other.response)


def test_shapes_and_ranges(data) -> None:
    assert data.features.shape == (120, 30, len(FEATURE_NAMES))
    assert data.current_score.shape == data.response.shape == (120, 30)
    assert bool(torch.isfinite(data.features).all()) and bool(torch.isfinite(data.response).all())
    for name in ("epts", "kdpi", "cpra"):
        values = _col(data, name)
        assert float(values.min()) >= 0.0 and float(values.max()) <= 1.0
    for locus in ("mismatch_a", "mismatch_b", "mismatch_dr"):
        assert set(_col(data, locus).unique().tolist()) <= {0.0, 1.0, 2.0}
    # Donor covariates are constant along each candidate list.
    donor_age = _col(data, "donor_age")
    assert torch.equal(donor_age, donor_age[:, :1].expand_as(donor_age))
    assert int(data.observed.sum()) == 60
    assert torch.equal(data.column("kdpi"), _col(data, "kdpi"))
    with pytest.raises(ValueError, match="unknown feature"):
        data.column("height")


def _cpra_points_loop(cpra: float) -> float:
    percent = math.floor(cpra * 100 + 1e-9)
    points = 0.0
    for low, value in CPRA_POINTS:
        if percent >= low:
            points = value
    return points


def test_cpra_sliding_scale() -> None:
    cpra = np.array([0.0, 0.19, 0.2, 0.799, 0.8, 0.95, 0.979, 0.98, 0.99, 1.0])
    assert cpra_points(cpra).tolist() == pytest.approx([0, 0, 0.08, 1.58, 2.46, 10.82, 17.30, 24.40, 50.09, 202.10])
    grid = np.linspace(0, 1, 1001)
    assert cpra_points(grid).tolist() == pytest.approx([_cpra_points_loop(c) for c in grid])


def test_response_is_kas_and_score_is_pre_kas(data) -> None:
    for d in range(0, 120, 7):
        for i in range(30):
            x = {name: float(_col(data, name)[d, i]) for name in FEATURE_NAMES}
            dr_points = 2.0 if x["mismatch_dr"] == 0 else (1.0 if x["mismatch_dr"] == 1 else 0.0)
            longevity = x["kdpi"] <= 0.2 and x["epts"] <= 0.2
            kas = (
                max(x["listing_years"], x["dialysis_years"])
                + _cpra_points_loop(x["cpra"])
                + dr_points
                + 4 * x["prior_living_donor"]
                + LONGEVITY_TIER * longevity
            )
            old = x["listing_years"] + 4 * (x["cpra"] >= 0.8) + dr_points + 4 * x["prior_living_donor"]
            assert float(data.response[d, i]) == pytest.approx(kas, rel=1e-5, abs=1e-4)
            assert float(data.current_score[d, i]) == pytest.approx(old, rel=1e-5, abs=1e-4)


def test_existing_score_disagrees_with_the_response_at_the_top() -> None:
    data = simulate_organ_matching(200, 50, seed=0)
    relevant = top_n_relevant(data.response, 10)
    assert 0.3 < kendall_tau(data.current_score, data.response) < 0.9
    assert precision_at_n(data.current_score, relevant, 10) < 0.85
    # Longevity matching: for a KDPI <= 20% donor, every EPTS <= 20% candidate outranks the others (except the
    # CPRA 100% candidates, who come first in KAS).
    low_kdpi = data.column("kdpi")[:, 0] <= 0.2
    tier = (data.column("epts") <= 0.2) & low_kdpi[:, None]
    rest = ~tier & (data.column("cpra") < 1.0)
    lists = torch.nonzero(tier.any(1) & rest.any(1)).flatten()
    assert lists.numel() > 10
    for d in lists.tolist():
        assert float(data.response[d][tier[d]].min()) > float(data.response[d][rest[d]].max())


def test_noise_only_on_the_observed_response() -> None:
    clean = simulate_organ_matching(20, 10, response_noise=0.0, seed=1)
    assert torch.equal(clean.response, clean.observed_response)
    noisy = simulate_organ_matching(20, 10, response_noise=2.0, seed=1)
    assert torch.equal(noisy.response, clean.response)
    assert 1.0 < float((noisy.observed_response - noisy.response).std()) < 3.0


def test_perfect_model_has_precision_one() -> None:
    data = simulate_organ_matching(50, 40, seed=0)
    relevant = top_n_relevant(data.response, 10)
    assert bool((relevant.sum(1) == 10).all())
    for n in (1, 5, 10):
        assert precision_at_n(data.response, relevant, n) == 1.0
    assert recall_at_n(data.response, relevant, 10) == 1.0
    assert precision_at_n(-data.response, relevant, 10) == 0.0
    assert kendall_tau(data.response, data.response) == pytest.approx(1.0)


def test_grades_follow_within_list_quantiles() -> None:
    outcome = torch.arange(20.0).view(1, 20)
    grades = grade_within_lists(outcome)
    assert grades[0].tolist() == [0] * 10 + [1] * 4 + [2] * 3 + [3] * 2 + [4]
    shuffled = outcome[:, torch.randperm(20)]
    assert torch.equal(grade_within_lists(shuffled).sort().values, grades)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n_donors": 0}, "n_donors"),
        ({"observed_fraction": 1.5}, "observed_fraction"),
        ({"response_noise": -1.0}, "response_noise"),
    ],
)
def test_invalid_arguments(kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        simulate_organ_matching(**kwargs)
    with pytest.raises(ValueError, match="n must be"):
        top_n_relevant(torch.zeros(2, 3), 0)


def _metric_reference(scores, relevant, n, valid):
    precision, recall = [], []
    for s, r, v in zip(scores.tolist(), relevant.tolist(), valid.tolist()):
        real = [i for i in range(len(s)) if v[i]]
        top = sorted(real, key=lambda i: -s[i])[:n]
        hits = sum(r[i] for i in top)
        precision.append(hits / n)
        total = sum(r[i] for i in real)
        if total:
            recall.append(hits / total)
    return float(np.mean(precision)), float(np.mean(recall))


def test_metrics_match_loops() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 9, generator=g)
    relevant = torch.rand(6, 9, generator=g) < 0.3
    relevant[2] = False  # a list without relevant items: skipped by recall
    valid = torch.ones(6, 9, dtype=torch.bool)
    valid[0, 6:] = False
    for n in (1, 3, 5):
        p_ref, r_ref = _metric_reference(scores, relevant & valid, n, valid)
        assert precision_at_n(scores, relevant, n, valid) == pytest.approx(p_ref)
        assert recall_at_n(scores, relevant, n, valid) == pytest.approx(r_ref)
    target = scores**3 - relevant.float()
    taus = [kendalltau(scores[i, valid[i]], target[i, valid[i]]).statistic for i in range(6)]
    assert kendall_tau(scores, target, valid) == pytest.approx(float(np.mean(taus)))
    assert int(top_n_hits(scores, relevant, 9, valid)[2]) == 0


def test_metrics_edge_cases() -> None:
    scores = torch.zeros(2, 3)
    with pytest.warns(RuntimeWarning, match="no list has a relevant item"):
        assert math.isnan(recall_at_n(scores, torch.zeros(2, 3, dtype=torch.bool), 2))
    with pytest.warns(RuntimeWarning, match="no list has two real items"):
        assert math.isnan(kendall_tau(scores[:, :1], scores[:, :1]))
    with pytest.raises(ValueError, match="n must be"):
        precision_at_n(scores, scores.bool(), 0)
    with pytest.raises(ValueError, match="shape"):
        precision_at_n(scores, torch.zeros(2, 4, dtype=torch.bool), 1)
    with pytest.raises(ValueError, match="shape"):
        kendall_tau(scores, torch.zeros(3, 3))
