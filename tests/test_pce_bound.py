"""The proved bound CE ≥ PCE − gap (λ ≥ λ₀), at random points and at every step of a training run."""

from __future__ import annotations

import math

import pytest
import torch

from pairloss import CrossEntropyLoss
from pairloss.data import open_set_digits
from pairloss.losses.crossentropy import concavity_lambda, pce_bound
from pairloss.models import MLPEmbedder


def _loop_gap(e: torch.Tensor, w: torch.Tensor, lam: float) -> float:
    """(1/λ) Σ_k ‖c_kˢ − λθ_k‖² with c_kˢ = (1/n) Σ_i p_ik z_i, written out."""
    z, theta = e.tolist(), w.tolist()
    n, c, d = len(z), len(theta), len(z[0])
    total = 0.0
    p = []
    for i in range(n):
        scores = [sum(a * b for a, b in zip(theta[k], z[i])) for k in range(c)]
        top = max(scores)
        ex = [math.exp(s - top) for s in scores]
        p.append([v / sum(ex) for v in ex])
    for k in range(c):
        for t in range(d):
            soft = sum(p[i][k] * z[i][t] for i in range(n)) / n
            total += (soft - lam * theta[k][t]) ** 2
    return total / lam


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("scale", [0.1, 1.0, 5.0])
def test_bound_holds_at_random_points(seed, scale):
    g = torch.Generator().manual_seed(seed)
    e = scale * torch.randn(12, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (12,), generator=g)
    w = scale * torch.randn(4, 5, generator=g, dtype=torch.float64)
    lam0 = float(concavity_lambda(e))
    for lam in (None, 1.5 * lam0, 10 * lam0):
        bound = pce_bound(e, y, w, lam=lam)
        assert bound.holds(), (float(bound.cross_entropy), float(bound.lower_bound))
        assert float(bound.gap) == pytest.approx(_loop_gap(e, w, float(bound.lam)), rel=1e-10)


def test_bound_is_tight_at_the_classifier_fixed_point():
    """At θ_k = c_kˢ/λ (a fixed point of θ ↦ cˢ(θ)/λ, found by iterating) the gap vanishes."""
    g = torch.Generator().manual_seed(0)
    e = torch.randn(10, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=g)
    lam = 4 * float(concavity_lambda(e))
    w = torch.zeros(3, 3, dtype=torch.float64)
    for _ in range(60):
        p = torch.softmax(e @ w.T, dim=1)
        w = p.T @ e / (10 * lam)
    bound = pce_bound(e, y, w, lam=lam)
    assert float(bound.gap) < 1e-20
    assert bound.holds()


def test_lambda_below_threshold_is_refused():
    e = torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="concavity threshold"):
        pce_bound(e, torch.tensor([0, 1, 0, 1, 0]), torch.randn(2, 3, dtype=torch.float64), lam=1e-6)


def test_bound_holds_at_every_step_of_training():
    """Train an MLP with CE on the digits; evaluate CE and PCE − gap on the batch at every step."""
    torch.manual_seed(0)
    split = open_set_digits()
    x, y = split.train_x[:200].double(), split.train_y[:200]
    model = MLPEmbedder(64, 8, (32,)).double()
    loss = CrossEntropyLoss(5, 8).double()
    optimizer = torch.optim.Adam([*model.parameters(), *loss.parameters()], lr=1e-2)
    for _ in range(40):
        e = model(x)
        value = loss(e, y)
        with torch.no_grad():
            bound = loss.bound(e, y)
        assert bound.holds(), (float(bound.cross_entropy), float(bound.lower_bound))
        assert float(bound.cross_entropy) == pytest.approx(value.item(), rel=1e-12)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
