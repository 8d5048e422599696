"""RankNet and LambdaLoss under ``torch.compile(fullgraph=True)`` (static shapes), and their host synchronisations.

The compiled losses are checked against eager on tiny padded lists with the ``aot_eager`` backend: it traces the
whole forward and backward through Dynamo and AOTAutograd (a graph break or a data-dependent branch fails
``fullgraph=True``) without building C++ kernels, so the suite stays fast; the same check with Inductor's
generated kernels is marked ``slow``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

import pairloss
from pairloss.functional import lambda_loss, lambdarank_loss, ranknet_loss
from pairloss.losses import LambdaLoss, RankNetLoss

LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "ranknet": lambda s, y: ranknet_loss(s, y),
    "ranknet_sigma_sum": lambda s, y: ranknet_loss(s, y, sigma=1.5, reduction="sum"),
    "lambdaloss": lambda s, y: lambda_loss(s, y),
    "lambdaloss_k_mean": lambda s, y: lambda_loss(s, y, k=3, reduction="mean"),
    "lambdaloss_ndcg1": lambda s, y: lambda_loss(s, y, weighing_scheme="ndcg_loss1"),
    "lambdaloss_none_k": lambda s, y: lambda_loss(s, y, weighing_scheme=None, k=4),
    "lambdarank": lambda s, y: lambdarank_loss(s, y),
    "ranknet_module": RankNetLoss(),
    "lambdaloss_module": LambdaLoss("ndcg_loss2", k=5),
}


def padded_lists(n_lists: int = 5, length: int = 7) -> tuple[Tensor, Tensor]:
    scores = torch.randn(n_lists, length, dtype=torch.float64)
    relevance = torch.randint(0, 4, (n_lists, length)).double()
    relevance[::2, -2:] = -1.0
    relevance[1] = 1.0  # no ordering information
    return scores, relevance


def value_and_gradient(fn: Callable[[Tensor, Tensor], Tensor], scores: Tensor, relevance: Tensor) -> list[Tensor]:
    leaf = scores.clone().requires_grad_(True)
    value = fn(leaf, relevance)
    (grad,) = torch.autograd.grad(value, leaf)
    return [value.detach(), grad]


@pytest.mark.parametrize("name", LOSSES)
def test_fullgraph_compile_matches_eager(name: str) -> None:
    torch._dynamo.reset()
    compiled = torch.compile(LOSSES[name], fullgraph=True, backend="aot_eager")
    for seed in (0, 1):  # a second input of the same shape reuses the graph
        torch.manual_seed(seed)
        scores, relevance = padded_lists()
        got = value_and_gradient(compiled, scores, relevance)
        want = value_and_gradient(LOSSES[name], scores, relevance)
        assert got[0].item() != 0.0
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_compiled_loss_reads_the_program_memory_budget() -> None:
    torch._dynamo.reset()
    scores, relevance = padded_lists(n_lists=9)
    want = value_and_gradient(LOSSES["lambdaloss"], scores, relevance)
    pairloss.set_memory_budget(3 * 7 * 7 * 8 * 2)  # two lists per block
    try:
        compiled = torch.compile(LOSSES["lambdaloss"], fullgraph=True, backend="aot_eager")
        got = value_and_gradient(compiled, scores, relevance)
    finally:
        pairloss.set_memory_budget(None)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["ranknet", "lambdaloss", "lambdaloss_k_mean", "lambdarank"])
def test_one_host_synchronisation_at_most(name: str) -> None:
    """Forward + backward read one value back to the host (the input check; none with the checks off) and never
    size a tensor from data."""
    scores, relevance = padded_lists(n_lists=40, length=12)
    leaf = scores.requires_grad_(True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        LOSSES[name](leaf, relevance).backward()
    calls = {event.key: event.count for event in prof.key_averages()}
    assert calls.get("aten::_local_scalar_dense", 0) == 1
    with pairloss.checks(False), profile(activities=[ProfilerActivity.CPU]) as unchecked:
        LOSSES[name](leaf, relevance).backward()
    assert "aten::_local_scalar_dense" not in {event.key for event in unchecked.key_averages()}
    for data_dependent in ("aten::nonzero", "aten::masked_select", "aten::unique_consecutive"):
        assert calls.get(data_dependent, 0) == 0, data_dependent
    assert sum(calls.values()) < 400  # a handful of kernels per block, not per pair or per list


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ranknet", "lambdaloss", "lambdaloss_k_mean"])
def test_inductor_compile_matches_eager(name: str) -> None:
    """The same with Inductor's generated C++ kernels (minutes on two cores, so marked slow)."""
    torch._dynamo.reset()
    compiled = torch.compile(LOSSES[name], fullgraph=True)
    scores, relevance = padded_lists()
    got = value_and_gradient(compiled, scores, relevance)
    want = value_and_gradient(LOSSES[name], scores, relevance)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
