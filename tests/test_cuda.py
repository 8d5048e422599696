"""The same values and gradients on a CUDA device as on the CPU: the engine losses, RS@k, the ranking losses and the
multi-stage large-batch step.

Marked ``cuda`` and skipped, with the reason, where ``torch.cuda.is_available()`` is false (as on the CPU-only
development machine: these tests have not run there). Each test computes the loss and its gradient on the CPU in
float64, then the same on the device from copies of the same inputs, and compares them; a small memory budget makes
the blocked losses run several blocks on the device.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

import pairloss
from pairloss.losses import (
    ApproxNDCGLoss,
    CircleLoss,
    ContrastiveLoss,
    LambdaLoss,
    LambdaRankLoss,
    ListMLELoss,
    ListNetLoss,
    MultiSimilarityLoss,
    NeuralNDCGLoss,
    NTXentLoss,
    RankNetLoss,
    RecallAtKSurrogateLoss,
    SmoothAPLoss,
    SupConLoss,
    TripletMarginLoss,
)
from pairloss.training.large_batch import large_batch_backward

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is false)"),
]

DEVICE = "cuda"
#: Small enough that a 96-sample batch or 12 lists of 10 items run in several blocks.
BUDGET = 16 * 2**10

ENGINE_LOSSES = {
    "contrastive": ContrastiveLoss(),
    "multi_similarity": MultiSimilarityLoss(),
    "triplet_all": TripletMarginLoss(margin=0.2),
    "triplet_semihard": TripletMarginLoss(margin=0.2, mining="semihard"),
    "supcon": SupConLoss(),
    "ntxent": NTXentLoss(),
    "circle": CircleLoss(),
}
RECALL_LOSSES = {
    "recall_at_k": RecallAtKSurrogateLoss(k=(1, 2, 4), tau2=0.1),
    "smooth_ap": SmoothAPLoss(tau=0.1),
}
RANKING_LOSSES: dict[str, Callable[..., Tensor]] = {
    "ranknet": RankNetLoss(),
    "ranknet_sigma_sum": RankNetLoss(sigma=2.0, reduction="sum"),
    "lambdaloss": LambdaLoss(),
    "lambdaloss_k_mean": LambdaLoss("ndcg_loss2", k=4, reduction="mean"),
    "lambdaloss_ndcg1": LambdaLoss("ndcg_loss1"),
    "lambdarank": LambdaRankLoss(),
    "listnet": ListNetLoss(),
    "listmle": ListMLELoss(),
    "approx_ndcg": ApproxNDCGLoss(),
    "neural_ndcg": NeuralNDCGLoss(),
}


def value_and_gradient(loss_fn: Callable[..., Tensor], x: Tensor, *rest: Tensor) -> tuple[Tensor, Tensor]:
    leaf = x.detach().clone().requires_grad_(True)
    with pairloss.memory_budget(BUDGET):
        value = loss_fn(leaf, *rest)
    value.backward()
    assert leaf.grad is not None
    return value.detach(), leaf.grad


def assert_same_on_device(loss_fn: Callable[..., Tensor], x: Tensor, *rest: Tensor) -> None:
    cpu_value, cpu_grad = value_and_gradient(loss_fn, x, *rest)
    on_device = [t.to(DEVICE) for t in (x, *rest)]
    value, grad = value_and_gradient(loss_fn, *on_device)
    assert value.device.type == DEVICE and grad.device.type == DEVICE
    torch.testing.assert_close(value.cpu(), cpu_value, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad.cpu(), cpu_grad, rtol=1e-8, atol=1e-12)


def embeddings(n: int = 96, dim: int = 16, classes: int = 8) -> tuple[Tensor, Tensor]:
    return torch.randn(n, dim, dtype=torch.float64), torch.arange(n) % classes


def padded_lists(n_lists: int = 12, length: int = 10) -> tuple[Tensor, Tensor]:
    scores = torch.randn(n_lists, length, dtype=torch.float64)
    relevance = torch.randint(0, 4, (n_lists, length)).double()
    relevance[::3, -3:] = -1.0  # padded tails
    relevance[1] = 2.0  # a list without ordering information
    return scores, relevance


@pytest.mark.parametrize("name", ENGINE_LOSSES)
def test_engine_losses(name: str) -> None:
    assert_same_on_device(ENGINE_LOSSES[name], *embeddings())


@pytest.mark.parametrize("name", RECALL_LOSSES)
def test_recall_surrogates(name: str) -> None:
    assert_same_on_device(RECALL_LOSSES[name], *embeddings(n=64, classes=4))


@pytest.mark.parametrize("name", RANKING_LOSSES)
def test_ranking_losses_on_padded_lists(name: str) -> None:
    assert_same_on_device(RANKING_LOSSES[name], *padded_lists())


def test_ranking_loss_on_flat_impressions() -> None:
    scores = torch.randn(40, dtype=torch.float64)
    relevance = torch.randint(0, 3, (40,)).double()
    group_ids = torch.randint(0, 6, (40,))
    assert_same_on_device(LambdaLoss(), scores, relevance, group_ids)


def test_compiled_ranking_losses() -> None:
    scores, relevance = (t.to(DEVICE) for t in padded_lists())
    for loss_fn in (RankNetLoss(), LambdaLoss()):
        compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
        got = value_and_gradient(compiled, scores, relevance)
        want = value_and_gradient(loss_fn, scores, relevance)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_multi_stage_step() -> None:
    x, y = embeddings(n=48, dim=6, classes=6)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4)).double()
    on_device = copy.deepcopy(model).to(DEVICE)
    loss_fn = RecallAtKSurrogateLoss(k=(1, 2, 4), tau2=0.1)
    cpu = large_batch_backward(model, x, y, loss_fn, chunk_size=16)
    device = large_batch_backward(on_device, x.to(DEVICE), y.to(DEVICE), loss_fn, chunk_size=16)
    assert device.loss == pytest.approx(cpu.loss, rel=1e-9)
    for got, want in zip(on_device.parameters(), model.parameters(), strict=True):
        assert got.grad is not None and want.grad is not None and got.grad.device.type == DEVICE
        torch.testing.assert_close(got.grad.cpu(), want.grad, rtol=1e-8, atol=1e-12)
