"""Proxy and classification losses: equal to pytorch-metric-learning (value, embedding and weight gradients),
to loop references, gradcheck, and input checks."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import pytorch_metric_learning.losses as pml_losses
import torch
from torch import Tensor, nn

import reference_loops as ref
from pairloss import functional
from pairloss.losses import proxy

C, D = 5, 4

# name -> (our module class, PML module class, weight attribute, functional form, loop reference)
CASES: dict[str, tuple[type[nn.Module], type[nn.Module], str, Callable[..., Tensor], Callable[..., float]]] = {
    "proxy_anchor": (
        proxy.ProxyAnchorLoss,
        pml_losses.ProxyAnchorLoss,
        "proxies",
        functional.proxy_anchor_loss,
        ref.proxy_anchor,
    ),
    "proxy_nca": (
        proxy.ProxyNCALoss,
        pml_losses.ProxyNCALoss,
        "proxies",
        functional.proxy_nca_loss,
        ref.proxy_nca,
    ),
    "normalized_softmax": (
        proxy.NormalizedSoftmaxLoss,
        pml_losses.NormalizedSoftmaxLoss,
        "W",
        functional.normalized_softmax_loss,
        ref.normalized_softmax,
    ),
    "arcface": (proxy.ArcFaceLoss, pml_losses.ArcFaceLoss, "W", functional.arcface_loss, ref.arcface),
    "cosface": (proxy.CosFaceLoss, pml_losses.CosFaceLoss, "W", functional.cosface_loss, ref.cosface),
}


def _batch(n: int = 12, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, dtype=torch.float64, generator=generator)
    y = torch.randint(0, C - 1, (n,), generator=generator)  # class C-1 absent: exercises empty proxies
    return x, y


def _pair(name: str) -> tuple[nn.Module, nn.Module, str]:
    ours_cls, pml_cls, attr, _, _ = CASES[name]
    ours = ours_cls(C, D).double()
    theirs = pml_cls(num_classes=C, embedding_size=D)
    getattr(theirs, attr).data = getattr(ours, attr).detach().clone()
    return ours, theirs, attr


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_pml(name: str) -> None:
    ours, theirs, attr = _pair(name)
    x, y = _batch()
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    value, expected = ours(a, y), theirs(b, y)
    value.backward()
    expected.backward()
    assert float(value.detach()) > 0
    assert float(value.detach()) == pytest.approx(float(expected.detach()), abs=1e-6, rel=1e-9)
    torch.testing.assert_close(a.grad, b.grad, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(getattr(ours, attr).grad, getattr(theirs, attr).grad, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_loop_reference(name: str) -> None:
    ours, _, attr = _pair(name)
    x, y = _batch(9, seed=1)
    expected = CASES[name][4](x, y, getattr(ours, attr).detach())
    assert float(ours(x, y).detach()) == pytest.approx(expected, abs=1e-9, rel=1e-9)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradcheck_embeddings_and_weights(name: str) -> None:
    ours, _, attr = _pair(name)
    fn = CASES[name][3]
    x, y = _batch(4, seed=2)
    weight = getattr(ours, attr).detach().clone().requires_grad_(True)
    x.requires_grad_(True)
    scale = {"arcface": {"scale": 4.0}, "cosface": {"scale": 4.0}, "proxy_anchor": {"alpha": 4.0}}.get(name, {})
    assert torch.autograd.gradcheck(lambda e, w: fn(e, y, w, **scale), (x, weight), fast_mode=True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_single_sample_and_single_class(name: str) -> None:
    ours, theirs, _ = _pair(name)
    for n in (1, 6):
        x = torch.randn(n, D, dtype=torch.float64, requires_grad=True)
        y = torch.zeros(n, dtype=torch.long)
        loss = ours(x, y)
        loss.backward()
        assert torch.isfinite(loss) and x.grad is not None and bool(torch.isfinite(x.grad).all())
        assert float(loss.detach()) == pytest.approx(float(theirs(x.detach(), y).detach()), abs=1e-9)


@pytest.mark.parametrize("name", sorted(CASES))
def test_invalid_inputs(name: str) -> None:
    ours, _, _ = _pair(name)
    x, y = _batch(6)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        ours(x, torch.tensor([0, 1, 2, 3, 4, 5]))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        ours(x, torch.tensor([0, 1, 2, 3, 4, -1]))
    with pytest.raises(ValueError, match="multi-hot"):
        ours(x, torch.eye(6, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN or infinite"):
        ours(x.masked_fill(torch.eye(6, D, dtype=torch.bool), float("nan")), y)
    with pytest.raises(ValueError, match="NaN or infinite"):
        ours(x.masked_fill(torch.eye(6, D, dtype=torch.bool), float("-inf")), y)
    with pytest.raises(ValueError, match="embedding size"):
        ours(torch.randn(6, D + 1, dtype=torch.float64), y)
    with pytest.raises(ValueError, match="2 dimensions"):
        ours(x[0], y)
    with pytest.raises(ValueError, match="integer class ids"):
        ours(x, y.double())
    with pytest.raises(ValueError, match="floating-point"):
        ours(x.long(), y)


def test_parameter_shapes_and_registration() -> None:
    for name, (cls, pml_cls, attr, _, _) in CASES.items():
        module = cls(C, D)
        assert getattr(module, attr).shape == getattr(pml_cls(num_classes=C, embedding_size=D), attr).shape, name
        assert isinstance(getattr(module, attr), nn.Parameter)
        assert attr in dict(module.named_parameters())
        assert module.formula and module.paper and module.family == "proxy"


def test_arcface_margin_is_in_degrees() -> None:
    x, y = _batch(8, seed=3)
    w = torch.randn(D, C, dtype=torch.float64)
    zero_margin = functional.arcface_loss(x, y, w, margin=0.0, scale=10.0)
    assert float(zero_margin) == pytest.approx(float(functional.cosface_loss(x, y, w, margin=0.0, scale=10.0)))
    assert float(functional.arcface_loss(x, y, w, margin=28.6, scale=10.0)) > float(zero_margin)


@pytest.mark.parametrize("name", ["proxy_nca", "normalized_softmax", "arcface", "cosface"])
@pytest.mark.parametrize("reducer", ["sum", "avg_non_zero", "threshold"])
def test_per_sample_reducers_match_pml(name: str, reducer: str) -> None:
    import pytorch_metric_learning.reducers as pml_reducers

    from pairloss import reducers

    ours_reducer, theirs_reducer = {
        "sum": (reducers.SumReducer(), pml_reducers.SumReducer()),
        "avg_non_zero": (reducers.AvgNonZeroReducer(), pml_reducers.AvgNonZeroReducer()),
        "threshold": (reducers.ThresholdReducer(high=3.0), pml_reducers.ThresholdReducer(high=3.0)),
    }[reducer]
    ours_cls, pml_cls, attr, _, _ = CASES[name]
    ours = ours_cls(C, D, reducer=ours_reducer).double()
    theirs = pml_cls(num_classes=C, embedding_size=D, reducer=theirs_reducer)
    getattr(theirs, attr).data = getattr(ours, attr).detach().clone()
    x, y = _batch(seed=7)
    assert ours(x, y).item() == pytest.approx(theirs(x, y).item(), rel=1e-9)
    per_sample = ours_cls(C, D, reducer="none").double()
    getattr(per_sample, attr).data = getattr(ours, attr).detach().clone()
    elements = per_sample(x, y)["loss"]["losses"]
    summed = ours_cls(C, D, reducer="sum").double()
    getattr(summed, attr).data = getattr(ours, attr).detach().clone()
    assert elements.shape == (12,) and float(elements.sum()) == pytest.approx(float(summed(x, y)), rel=1e-12)
