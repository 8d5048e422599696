"""Invariants of the kidney-allocation simulator and of the top-N metrics used on it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from pairloss.data.organ import FEATURE_NAMES, grade_within_lists, simulate_organ_matching, top_n_relevant
from pairloss.metrics.topn import kendall_tau, precision_at_n, recall_at_n, top_n_hits


@pytest.fixture(scope="module")
def data():
    return simulate_organ_matching(120, 30, seed=3)


def _col(data, name: str) -> torch.Tensor:
    return data.features[..., FEATURE_NAMES.index(name)]


def test_seeded_and_deterministic(data) -> None:
    again = simulate_organ_matching(120, 30, seed=3)
    other = simulate_organ_matching(120, 30, seed=4)
    for field in ("features", "kas_score", "outcome", "observed_outcome", "observed"):
        assert torch.equal(getattr(data, field), getattr(again, field))
    assert not torch.equal(data.outcome, other.outcome)


def test_shapes_and_ranges(data) -> None:
    assert data.features.shape == (120, 30, len(FEATURE_NAMES))
    assert data.kas_score.shape == data.outcome.shape == (120, 30)
    assert bool(torch.isfinite(data.features).all()) and bool(torch.isfinite(data.outcome).all())
    for name in ("epts", "kdpi", "cpra"):
        values = _col(data, name)
        assert float(values.min()) >= 0.0 and float(values.max()) <= 1.0
    for locus in ("mismatch_a", "mismatch_b", "mismatch_dr"):
        assert set(_col(data, locus).unique().tolist()) <= {0.0, 1.0, 2.0}
    # Donor covariates are constant along each candidate list.
    donor_age = _col(data, "donor_age")
    assert torch.equal(donor_age, donor_age[:, :1].expand_as(donor_age))
    assert int(data.observed.sum()) == 60


def test_kas_score_follows_its_definition(data) -> None:
    epts, kdpi, dr = _col(data, "epts"), _col(data, "kdpi"), _col(data, "mismatch_dr")
    expected = (
        _col(data, "waiting_years")
        + 12 * _col(data, "cpra") ** 4
        + 2.0 * (dr == 0)
        + 1.0 * (dr == 1)
        + 4.0 * ((epts <= 0.2) & (kdpi <= 0.2))
        + _col(data, "abo_identical")
    )
    assert torch.allclose(data.kas_score, expected, atol=1e-4)


def test_outcome_has_structure_the_score_misses(data) -> None:
    # The outcome falls with the HLA mismatches and the donor–candidate age gap, which the score ignores.
    outcome = data.outcome.flatten().numpy()
    mismatches = (_col(data, "mismatch_a") + _col(data, "mismatch_b") + _col(data, "mismatch_dr")).flatten()
    gap = (_col(data, "donor_age") - _col(data, "patient_age")).abs().flatten()
    assert np.corrcoef(mismatches.numpy(), outcome)[0, 1] < -0.1
    assert np.corrcoef(gap.numpy(), outcome)[0, 1] < -0.2
    assert kendall_tau(data.kas_score, data.outcome) < 0.2


def test_observation_noise_only_on_observed_outcome() -> None:
    clean = simulate_organ_matching(20, 10, observation_noise=0.0, seed=1)
    assert torch.equal(clean.outcome, clean.observed_outcome)


def test_perfect_model_has_precision_one() -> None:
    data = simulate_organ_matching(50, 40, seed=0)
    relevant = top_n_relevant(data.outcome, 10)
    assert bool((relevant.sum(1) == 10).all())
    for n in (1, 5, 10):
        assert precision_at_n(data.outcome, relevant, n) == 1.0
    assert recall_at_n(data.outcome, relevant, 10) == 1.0
    assert precision_at_n(-data.outcome, relevant, 10) == 0.0
    assert kendall_tau(data.outcome, data.outcome) == pytest.approx(1.0)


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
        ({"outcome_noise": -1.0}, "noise"),
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
