"""Every loss family across 2 gloo ranks: loss and parameter gradients equal one process on the concatenated batch.

One spawn of 2 processes runs every case (float64) on equal shards, unequal shards and a rank without samples:
multi-view losses (views ``[k, n, d]`` and lists of views, joined along the object axis), ranking lists of different
lengths per rank (padded with relevance −1), flat lists whose query groups straddle the ranks, the engine losses,
a hashing and a multi-label loss. Then the inputs that cannot be joined: every rank must raise the same error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import nn

import pairloss
from gloo_ranks import run_on_ranks
from pairloss.losses.base import BatchAxis
from pairloss.training.distributed import CrossRankLoss, all_gather_with_grad

WORLD = 2
IN = 5
#: Shards of a 12-sample batch: (rank 0, rank 1).
SHARDS = {"equal": (6, 6), "unequal": (5, 7), "empty": (0, 12)}


def _model(out: int = 4) -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(IN, 8), nn.Tanh(), nn.Linear(8, out)).double()


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _part(rank: int | None, split: str) -> slice:
    """This rank's samples of the 12 (``rank=None``: the whole batch)."""
    if rank is None:
        return slice(0, 12)
    sizes = SHARDS[split]
    return slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))


# ---------------------------------------------------------------- the cases: (loss, value of the shard)

Compute = Callable[[nn.Module, nn.Module, int | None, str], torch.Tensor]

VIEWS = torch.randn(3, 12, IN, generator=_generator(1), dtype=torch.float64)


def _views(loss: nn.Module, model: nn.Module, rank: int | None, split: str) -> torch.Tensor:
    return loss(model(VIEWS[:, _part(rank, split)]))


def _view_list(loss: nn.Module, model: nn.Module, rank: int | None, split: str) -> torch.Tensor:
    return loss([model(view[_part(rank, split)]) for view in VIEWS])


EMBED_X = torch.randn(12, IN, generator=_generator(2), dtype=torch.float64)
EMBED_Y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3])
EMBED_Y[:5] = torch.tensor([4, 5, 6, 7, 8])  # rank 0's unequal shard has no positive pair of its own


def _embeddings(loss: nn.Module, model: nn.Module, rank: int | None, split: str) -> torch.Tensor:
    part = _part(rank, split)
    return loss(model(EMBED_X[part]), EMBED_Y[part])


MULTI_HOT = torch.rand(12, 6, generator=_generator(3)) < 0.4


def _multilabel(loss: nn.Module, model: nn.Module, rank: int | None, split: str) -> torch.Tensor:
    part = _part(rank, split)
    return loss(model(EMBED_X[part]), MULTI_HOT[part])


# ranking lists: the first 5 lists have 6 items, the other 7 have 8; rank 0 holds lists of 6 items only
LIST_X = torch.randn(12, 8, IN, generator=_generator(4), dtype=torch.float64)
LIST_REL = torch.randint(0, 4, (12, 8), generator=_generator(5)).double()
LIST_REL[:5, 6:] = -1.0


def _lists(loss: nn.Module, model: nn.Module, rank: int | None, split: str) -> torch.Tensor:
    part = _part(rank, split)
    length = 6 if rank == 0 and split == "unequal" else 8
    return loss(model(LIST_X[part, :length]).squeeze(-1), LIST_REL[part, :length])


# flat impressions whose query groups straddle the ranks
FLAT_X = torch.randn(12, IN, generator=_generator(6), dtype=torch.float64)
FLAT_REL = torch.randint(0, 3, (12,), generator=_generator(7)).double()
FLAT_GROUPS = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0, 1, 3, 3, 3])


def _flat(loss: nn.Module, model: nn.Module, rank: int | None, split: str) -> torch.Tensor:
    part = _part(rank, split)
    return loss(model(FLAT_X[part]).squeeze(-1), FLAT_REL[part], FLAT_GROUPS[part])


CASES: dict[str, tuple[Callable[[], nn.Module], Compute, int]] = {
    "m3g": (lambda: pairloss.M3GLoss(tol=1e-10, max_iter=5000, check_every=1), _views, 4),
    "m3g-list": (lambda: pairloss.M3GLoss(tol=1e-10, max_iter=5000, check_every=1), _view_list, 4),
    "pairwise-infonce": (lambda: pairloss.PairwiseInfoNCELoss(temperature=0.5), _views, 4),
    "pairwise-infonce-list": (lambda: pairloss.PairwiseInfoNCELoss(temperature=0.5), _view_list, 4),
    "average-of-rest-infonce": (lambda: pairloss.AverageOfRestInfoNCELoss(temperature=0.5), _views, 4),
    "ranknet-lists": (lambda: pairloss.RankNetLoss(), _lists, 1),
    "lambdaloss-lists": (lambda: pairloss.LambdaLoss(), _lists, 1),
    "listnet-lists": (lambda: pairloss.ListNetLoss(), _lists, 1),
    "ranknet-groups": (lambda: pairloss.RankNetLoss(), _flat, 1),
    "contrastive": (lambda: pairloss.ContrastiveLoss(neg_margin=0.9), _embeddings, 4),
    "multi-similarity": (lambda: pairloss.MultiSimilarityLoss(), _embeddings, 4),
    "triplet": (lambda: pairloss.TripletMarginLoss(margin=0.3), _embeddings, 4),
    "ntxent": (lambda: pairloss.NTXentLoss(temperature=0.5), _embeddings, 4),
    "supcon": (lambda: pairloss.SupConLoss(temperature=0.5), _embeddings, 4),
    "circle": (lambda: pairloss.CircleLoss(), _embeddings, 4),
    "dpsh-hashing": (lambda: pairloss.DPSHLoss(), _embeddings, 4),
    "multilabel-pairwise": (lambda: pairloss.MultiLabelPairwiseLoss(), _multilabel, 6),
}


def _error_cases(rank: int) -> dict[str, Callable[[], torch.Tensor]]:
    """Inputs that cannot make one batch; each must raise the same ValueError on every rank."""
    x = EMBED_X[_part(rank, "unequal")].clone().requires_grad_()
    y = EMBED_Y[_part(rank, "unequal")]
    nan = x.detach().clone()
    if rank == 1:
        nan[2, 1] = float("nan")
    wide = torch.randn(3, 4 + rank, dtype=torch.float64)
    return {
        "nan-on-one-rank-engine": lambda: CrossRankLoss(pairloss.ContrastiveLoss())(nan, y),
        "nan-on-one-rank-gather": lambda: CrossRankLoss(pairloss.DPSHLoss())(nan, y),
        "features-differ": lambda: CrossRankLoss(pairloss.ContrastiveLoss())(wide, torch.arange(3)),
        "label-columns-differ": lambda: CrossRankLoss(pairloss.MultiLabelPairwiseLoss())(wide, wide > 0),
        "empty-everywhere-engine": lambda: CrossRankLoss(pairloss.ContrastiveLoss())(x[:0], y[:0]),
        "empty-everywhere-views": lambda: CrossRankLoss(pairloss.M3GLoss())(VIEWS[:, :0]),
        "argument-missing-on-one-rank": lambda: CrossRankLoss(pairloss.RankNetLoss())(
            x[:, 0], y.double(), *([y] if rank == 0 else [])
        ),
    }


# ---------------------------------------------------------------- the worker and the single process


def _run(compute: Compute, loss: nn.Module, out: int, rank: int | None, split: str) -> tuple[Any, list[Any]]:
    model = _model(out)
    value = compute(loss, model, rank, split)
    value.backward()
    grads = []
    for p in model.parameters():
        assert p.grad is not None
        if rank is not None:
            dist.all_reduce(p.grad)
            p.grad /= WORLD  # what DDP's averaging does
        grads.append(p.grad)
    return value.detach(), grads


def _rank_results(rank: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for split in SHARDS:
        for name, (make_loss, compute, out) in CASES.items():
            results[f"{name}/{split}"] = _run(compute, CrossRankLoss(make_loss()), out, rank, split)
    for name, call in _error_cases(rank).items():
        try:
            call()
            results[f"error/{name}"] = "no error"
        except ValueError as error:
            results[f"error/{name}"] = str(error)
    views = VIEWS[:, _part(rank, "unequal")]
    results["gather/axis1"] = all_gather_with_grad(views, axis=1)
    lists = LIST_REL[_part(rank, "unequal"), : 6 if rank == 0 else 8]
    results["gather/padded"] = all_gather_with_grad(lists, pad=-1.0)
    return results


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return run_on_ranks(_rank_results, WORLD, tmp_path_factory.mktemp("cross_rank"))


@pytest.mark.parametrize("split", list(SHARDS))
@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_equal_one_process(ranks: list[dict[str, Any]], name: str, split: str) -> None:
    make_loss, compute, out = CASES[name]
    expected, expected_grads = _run(compute, make_loss(), out, None, split)
    for rank, results in enumerate(ranks):
        value, grads = results[f"{name}/{split}"]
        torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-12, msg=f"{name} value, rank {rank}")
        for got, want in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12, msg=f"{name} gradient, rank {rank}")


def test_the_cases_are_not_trivial() -> None:
    # every case's loss depends on pairs across the split: the mean of the per-rank losses is not the global loss
    for name, (make_loss, compute, out) in CASES.items():
        whole = compute(make_loss(), _model(out), None, "unequal")
        halves = [compute(make_loss(), _model(out), r, "unequal") for r in range(WORLD)]
        assert not torch.allclose(whole, sum(halves) / WORLD, rtol=1e-6), name  # type: ignore[arg-type]


EXPECTED_ERRORS = {
    "nan-on-one-rank-engine": "embeddings contains 1 NaN or infinite value(s) (on rank 1)",
    "nan-on-one-rank-gather": "NaN or infinite",
    "features-differ": "same size on every rank along all axes but the sample axis 0",
    "label-columns-differ": "same size on every rank along all axes but the sample axis 0",
    "empty-everywhere-engine": "embeddings is empty",
    "empty-everywhere-views": "views is empty",
    "argument-missing-on-one-rank": "different arguments on different ranks",
}


@pytest.mark.parametrize("name", list(EXPECTED_ERRORS))
def test_inputs_that_cannot_be_joined_raise_the_same_error_on_every_rank(
    ranks: list[dict[str, Any]], name: str
) -> None:
    messages = [results[f"error/{name}"] for results in ranks]
    assert messages[0] == messages[1], messages
    assert EXPECTED_ERRORS[name] in messages[0]


def test_all_gather_along_an_axis_and_with_padding(ranks: list[dict[str, Any]]) -> None:
    views, offset = ranks[1]["gather/axis1"]
    assert torch.equal(views, VIEWS) and offset == 5
    lists, offset = ranks[0]["gather/padded"]
    assert torch.equal(lists, LIST_REL) and offset == 0


def test_batch_axes_of_the_families() -> None:
    assert pairloss.M3GLoss.batch_axes["views"] == BatchAxis(axis=1)
    assert pairloss.RankNetLoss.batch_axes["relevance"] == BatchAxis(pad=-1.0)
    wrapped = CrossRankLoss(pairloss.RankNetLoss(), batch_axes={"group_ids": BatchAxis(axis=None)})
    assert wrapped.batch_axes["group_ids"].axis is None and wrapped.batch_axes["scores"].pad == 0.0
