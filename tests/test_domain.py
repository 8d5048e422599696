"""The sim-to-real pairwise loss against an explicit loop, its gradient, edge cases and validation."""

from __future__ import annotations

import math

import pytest
import torch

from pairloss import SimRealPairLoss
from pairloss.functional import sim_real_pair_loss
from pairloss.losses.base import registered_losses


def reference(sim: torch.Tensor, real: torch.Tensor, margin: float, weight: float) -> float:
    s, r = sim.tolist(), real.tolist()
    p = len(s)
    positive = sum(sum((a - b) ** 2 for a, b in zip(s[i], r[i])) for i in range(p)) / p
    negative = 0.0
    for i in range(p):
        for j in range(p):
            if i != j:
                d = math.sqrt(sum((a - b) ** 2 for a, b in zip(s[i], r[j])))
                negative += max(0.0, margin - d) ** 2
    return positive + (weight * negative / (p * (p - 1)) if p > 1 else 0.0)


@pytest.mark.parametrize("margin,weight", [(1.0, 1.0), (3.0, 0.5), (0.2, 0.0)])
def test_matches_loop(margin, weight):
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(7, 3, generator=g, dtype=torch.float64)
    real = sim + 0.5 * torch.randn(7, 3, generator=g, dtype=torch.float64)
    value = sim_real_pair_loss(sim, real, margin=margin, negative_weight=weight)
    assert value.item() == pytest.approx(reference(sim, real, margin, weight), rel=1e-10)
    assert SimRealPairLoss(margin, weight)(sim, real).item() == pytest.approx(value.item())


def test_hinge_is_active_and_inactive():
    """Far non-pairs cost nothing; close non-pairs cost (m − d)²."""
    sim = torch.tensor([[0.0, 0.0], [10.0, 0.0]], dtype=torch.float64)
    assert sim_real_pair_loss(sim, sim.clone()).item() == 0.0
    close = torch.tensor([[0.0, 0.0], [0.5, 0.0]], dtype=torch.float64)
    assert sim_real_pair_loss(close, close.clone(), margin=1.0).item() == pytest.approx(0.25)


def test_gradcheck():
    g = torch.Generator().manual_seed(1)
    sim = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    real = (0.3 * torch.randn(5, 3, generator=g, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: sim_real_pair_loss(a, b, margin=2.0), (sim, real))


def test_single_pair_and_identical_pairs():
    """P = 1 has no non-pair; identical embeddings give a finite loss and finite gradients (no NaN at d = 0)."""
    sim = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)
    real = torch.randn(1, 4, dtype=torch.float64)
    value = sim_real_pair_loss(sim, real)
    assert value.item() == pytest.approx(float((sim.detach() - real).pow(2).sum()))
    same = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    out = sim_real_pair_loss(same, torch.zeros(3, 2, dtype=torch.float64))
    out.backward()
    assert out.item() == pytest.approx(1.0, rel=1e-5)
    assert same.grad is not None and torch.isfinite(same.grad).all()


def test_registered():
    assert registered_losses()["SimRealPairLoss"].family == "domain"


@pytest.mark.parametrize(
    "sim,real,match",
    [
        (torch.randn(3, 2), torch.randn(4, 2), "same shape"),
        (torch.randn(3), torch.randn(3), "2 dimensions"),
        (torch.randn(3, 2), torch.randn(3, 2, dtype=torch.float64), "dtypes differ"),
        (torch.tensor([[0.0, float("nan")]]), torch.zeros(1, 2), "NaN"),
        (torch.zeros(1, 2), torch.tensor([[float("inf"), 0.0]]), "NaN"),
        (torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long), "floating"),
        (torch.zeros(0, 2), torch.zeros(0, 2), "empty"),
    ],
)
def test_invalid_inputs(sim, real, match):
    with pytest.raises(ValueError, match=match):
        sim_real_pair_loss(sim, real)


def test_invalid_hyper_parameters():
    with pytest.raises(ValueError, match="margin"):
        SimRealPairLoss(margin=0.0)
    with pytest.raises(ValueError, match="negative_weight"):
        sim_real_pair_loss(torch.zeros(2, 2), torch.zeros(2, 2), negative_weight=-1.0)
