"""Cross-entropy and pairwise cross-entropy against explicit loops, gradients, edge cases and validation."""

from __future__ import annotations

import math

import pytest
import torch

from pairloss import CrossEntropyLoss, PairwiseCrossEntropyLoss
from pairloss.functional import cross_entropy_loss, pairwise_cross_entropy_loss
from pairloss.losses.base import registered_losses


def _features(e: list[list[float]], normalize: bool, temperature: float) -> list[list[float]]:
    out = []
    for row in e:
        norm = math.sqrt(sum(v * v for v in row)) if normalize else 1.0
        out.append([v / norm / temperature for v in row])
    return out


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def _softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    ex = [math.exp(s - top) for s in scores]
    total = sum(ex)
    return [v / total for v in ex]


def ce_reference(e, y, w, normalize=False, temperature=1.0, smoothing=0.0) -> float:
    z = _features(e.tolist(), normalize, temperature)
    theta = w.tolist()
    n, c = len(z), len(theta)
    total = 0.0
    for i in range(n):
        p = _softmax([_dot(theta[k], z[i]) for k in range(c)])
        for k in range(c):
            q = (1 - smoothing) * (1.0 if k == int(y[i]) else 0.0) + smoothing / c
            total -= q * math.log(p[k])
    return total / n


def pce_reference(e, y, w, lam, normalize=False, temperature=1.0) -> float:
    """The paper's formula term by term, with the double sum over pairs written out."""
    z = _features(e.tolist(), normalize, temperature)
    theta = w.tolist()
    labels = [int(v) for v in y]
    n, c, d = len(z), len(theta), len(z[0])
    p = [_softmax([_dot(theta[k], z[i]) for k in range(c)]) for i in range(n)]
    tightness = 0.0
    for i in range(n):
        for j in range(n):
            if labels[j] == labels[i]:
                tightness -= _dot(z[i], z[j]) / (2 * lam * n * n)
    soft = [[sum(p[i][k] * z[i][t] for i in range(n)) / n for t in range(d)] for k in range(c)]
    contrastive = 0.0
    for i in range(n):
        inner = [sum(p[j][k] * _dot(z[i], z[j]) for j in range(n)) / (lam * n) for k in range(c)]
        top = max(inner)
        contrastive += (top + math.log(sum(math.exp(v - top) for v in inner))) / n
    contrastive -= sum(_dot(s, s) for s in soft) / (2 * lam)
    return tightness + contrastive


def _data(n=9, d=4, c=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.randint(0, c, (n,), generator=g)
    w = torch.randn(c, d, generator=g, dtype=dtype)
    return e, y, w


@pytest.mark.parametrize("normalize,temperature,smoothing", [(False, 1.0, 0.0), (True, 0.5, 0.0), (False, 2.0, 0.1)])
def test_cross_entropy_matches_loop(normalize, temperature, smoothing):
    e, y, w = _data()
    value = cross_entropy_loss(e, y, w, normalize=normalize, temperature=temperature, label_smoothing=smoothing)
    assert value.item() == pytest.approx(ce_reference(e, y, w, normalize, temperature, smoothing), rel=1e-10)


@pytest.mark.parametrize("lam,normalize,temperature", [(0.7, False, 1.0), (3.0, True, 0.5), (None, False, 1.0)])
def test_pce_matches_loop(lam, normalize, temperature):
    e, y, w = _data(seed=1)
    value = pairwise_cross_entropy_loss(e, y, w, lam=lam, normalize=normalize, temperature=temperature)
    z = _features(e.tolist(), normalize, temperature)
    used = lam if lam is not None else sum(_dot(v, v) for v in z) / (2 * len(z))
    assert value.item() == pytest.approx(pce_reference(e, y, w, used, normalize, temperature), rel=1e-10)


def test_gradcheck_cross_entropy_and_pce():
    e, y, w = _data(n=6, d=3, c=3, seed=2)
    e.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: cross_entropy_loss(a, y, b, normalize=True, temperature=0.5, label_smoothing=0.1), (e, w)
    )
    assert torch.autograd.gradcheck(lambda a, b: pairwise_cross_entropy_loss(a, y, b, lam=1.3), (e, w))
    assert torch.autograd.gradcheck(lambda a, b: pairwise_cross_entropy_loss(a, y, b, normalize=True), (e, w))


def test_one_sample_and_one_class_are_finite_with_finite_gradients():
    _, _, w = _data(n=1, seed=3)
    for n, y in [(1, torch.tensor([2])), (5, torch.zeros(5, dtype=torch.long))]:
        x = torch.randn(n, 4, dtype=torch.float64, requires_grad=True)
        for fn in (cross_entropy_loss, pairwise_cross_entropy_loss):
            value = fn(x, y, w)
            value.backward()
            assert torch.isfinite(value)
            assert x.grad is not None and torch.isfinite(x.grad).all()
            x.grad = None


def test_pce_tightness_is_only_same_class_pairs():
    """Without a positive pair (all labels distinct) only self-pairs enter the tightness term; merging two classes
    adds exactly the new pair's −2 z_0ᵀz_1/(2λn²) (the contrastive term does not depend on the labels)."""
    e, _, w = _data(n=3, c=3, seed=4)
    y = torch.tensor([0, 1, 2])
    lam = 2.0
    value = pairwise_cross_entropy_loss(e, y, w, lam=lam)
    z = e.tolist()
    assert value.item() == pytest.approx(pce_reference(e, y, w, lam), rel=1e-10)
    merged = pairwise_cross_entropy_loss(e, torch.tensor([0, 0, 2]), w, lam=lam)
    extra = -2 * _dot(z[0], z[1]) / (2 * lam * 9)
    assert (merged - value).item() == pytest.approx(extra, rel=1e-10)


def test_modules_register_and_match_functional():
    losses = registered_losses()
    assert losses["CrossEntropyLoss"].family == "crossentropy"
    assert losses["PairwiseCrossEntropyLoss"].family == "crossentropy"
    e, y, _ = _data()
    ce = CrossEntropyLoss(3, 4, label_smoothing=0.1).double()
    pce = PairwiseCrossEntropyLoss(3, 4, lam=2.0).double()
    assert ce(e, y).item() == pytest.approx(cross_entropy_loss(e, y, ce.weight, label_smoothing=0.1).item())
    assert pce(e, y).item() == pytest.approx(pairwise_cross_entropy_loss(e, y, pce.weight, lam=2.0).item())
    pce(e, y).backward()
    assert pce.weight.grad is not None and torch.isfinite(pce.weight.grad).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"e": torch.randn(4, 3), "y": torch.tensor([0, 1, 0, 1]), "w": torch.randn(2, 5)}, "features"),
        ({"e": torch.randn(4, 3), "y": torch.tensor([0, 1, 0, 2]), "w": torch.randn(2, 3)}, r"\[0, 2\)"),
        ({"e": torch.randn(4, 3), "y": torch.tensor([0.0, 1, 0, 1]), "w": torch.randn(2, 3)}, "integer"),
        ({"e": torch.randn(4), "y": torch.tensor([0, 1, 0, 1]), "w": torch.randn(2, 3)}, "2 dimensions"),
        ({"e": torch.tensor([[0.0, float("nan")]] * 2), "y": torch.tensor([0, 1]), "w": torch.randn(2, 2)}, "NaN"),
        ({"e": torch.randn(2, 2), "y": torch.tensor([0, 1]), "w": torch.tensor([[1.0, float("inf")]] * 2)}, "NaN"),
        ({"e": torch.randint(0, 3, (4, 3)), "y": torch.tensor([0, 1, 0, 1]), "w": torch.randn(2, 3)}, "floating"),
        ({"e": torch.randn(3, 3), "y": torch.tensor([0, 1, 0, 1]), "w": torch.randn(2, 3)}, "4 entries"),
    ],
)
def test_invalid_inputs_raise(kwargs, match):
    for fn in (cross_entropy_loss, pairwise_cross_entropy_loss):
        with pytest.raises(ValueError, match=match):
            fn(kwargs["e"], kwargs["y"], kwargs["w"])


def test_invalid_hyper_parameters_raise():
    e, y, w = _data()
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy_loss(e, y, w, label_smoothing=1.0)
    with pytest.raises(ValueError, match="temperature"):
        cross_entropy_loss(e, y, w, temperature=0.0)
    with pytest.raises(ValueError, match="lam"):
        pairwise_cross_entropy_loss(e, y, w, lam=-1.0)
    with pytest.raises(ValueError, match="lam"):
        PairwiseCrossEntropyLoss(3, 4, lam=0.0)
