"""PML-compatible composition: miners, indices_tuple, reducers and CrossBatchMemory give PML's values."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import pytorch_metric_learning.distances as pml_distances
import pytorch_metric_learning.losses as pml_losses
import pytorch_metric_learning.miners as pml_miners
import pytorch_metric_learning.reducers as pml_reducers
import torch
from torch import Tensor

import pairloss
from pairloss import miners, reducers
from pairloss.similarity import CosineSimilarity, LpDistance


def _batch(n: int = 24, d: int = 5, classes: int = 4, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, dtype=torch.float64, generator=generator), torch.randint(
        0, classes, (n,), generator=generator
    )


#: (ours, PML's) miner pairs with the same arguments.
MINERS: dict[str, tuple[Callable[[], torch.nn.Module], Callable[[], torch.nn.Module]]] = {
    "multi_similarity": (miners.MultiSimilarityMiner, pml_miners.MultiSimilarityMiner),
    "multi_similarity_distance": (
        lambda: miners.MultiSimilarityMiner(0.3, distance=LpDistance()),
        lambda: pml_miners.MultiSimilarityMiner(0.3, distance=pml_distances.LpDistance()),
    ),
    "batch_hard": (miners.BatchHardMiner, pml_miners.BatchHardMiner),
    "batch_hard_cosine": (
        lambda: miners.BatchHardMiner(distance=CosineSimilarity()),
        lambda: pml_miners.BatchHardMiner(distance=pml_distances.CosineSimilarity()),
    ),
    "batch_easy_hard": (miners.BatchEasyHardMiner, pml_miners.BatchEasyHardMiner),
    "batch_semihard_hard": (
        lambda: miners.BatchEasyHardMiner("semihard", "hard"),
        lambda: pml_miners.BatchEasyHardMiner("semihard", "hard"),
    ),
    "batch_all_hard": (
        lambda: miners.BatchEasyHardMiner("all", "hard", allowed_neg_range=(0.2, 1.5)),
        lambda: pml_miners.BatchEasyHardMiner("all", "hard", allowed_neg_range=(0.2, 1.5)),
    ),
    "batch_easy_all_cosine": (
        lambda: miners.BatchEasyHardMiner("easy", "all", distance=CosineSimilarity()),
        lambda: pml_miners.BatchEasyHardMiner("easy", "all", distance=pml_distances.CosineSimilarity()),
    ),
    "triplet_margin": (lambda: miners.TripletMarginMiner(0.2), lambda: pml_miners.TripletMarginMiner(0.2)),
    "triplet_semihard": (
        lambda: miners.TripletMarginMiner(0.3, "semihard"),
        lambda: pml_miners.TripletMarginMiner(0.3, "semihard"),
    ),
    "triplet_hard_cosine": (
        lambda: miners.TripletMarginMiner(0.3, "hard", distance=CosineSimilarity()),
        lambda: pml_miners.TripletMarginMiner(0.3, "hard", distance=pml_distances.CosineSimilarity()),
    ),
    "triplet_easy": (
        lambda: miners.TripletMarginMiner(0.1, "easy"),
        lambda: pml_miners.TripletMarginMiner(0.1, "easy"),
    ),
    "pair_margin": (miners.PairMarginMiner, pml_miners.PairMarginMiner),
    "pair_margin_cosine": (
        lambda: miners.PairMarginMiner(0.5, 0.3, distance=CosineSimilarity()),
        lambda: pml_miners.PairMarginMiner(0.5, 0.3, distance=pml_distances.CosineSimilarity()),
    ),
}

#: The pair and triplet losses that PML also has (default arguments in both libraries).
LOSSES = (
    "ContrastiveLoss",
    "MultiSimilarityLoss",
    "CircleLoss",
    "GeneralizedLiftedStructureLoss",
    "NTXentLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "MarginLoss",
    "LiftedStructureLoss",
    "NPairsLoss",
)
WITH_REFERENCE = {"LiftedStructureLoss", "NPairsLoss"}  # PML's own versions refuse a reference set too


@pytest.mark.parametrize("name", sorted(MINERS))
@pytest.mark.parametrize("with_reference", [False, True])
def test_miners_return_pml_indices(name: str, with_reference: bool) -> None:
    ours, theirs = (make() for make in MINERS[name])
    x, y = _batch()
    args = (x, y, *_batch(15, seed=1)) if with_reference else (x, y)
    got, expected = ours(*args), theirs(*args)
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)


def _value_and_grad(loss: torch.nn.Module, x: Tensor, *args: object, **kwargs: object) -> tuple[float, Tensor]:
    leaf = x.clone().requires_grad_(True)
    value = loss(leaf, *args, **kwargs)
    (grad,) = torch.autograd.grad(value, leaf, allow_unused=True)
    return float(value.detach()), torch.zeros_like(leaf) if grad is None else grad


@pytest.mark.parametrize("loss_name", LOSSES)
@pytest.mark.parametrize(
    "miner_name", ["multi_similarity", "batch_hard", "batch_easy_hard", "triplet_semihard", "pair_margin"]
)
@pytest.mark.parametrize("whose_miner", ["ours", "pml"])
def test_losses_with_mined_indices_match_pml(loss_name: str, miner_name: str, whose_miner: str) -> None:
    x, y = _batch(seed=2)
    miner = MINERS[miner_name][0 if whose_miner == "ours" else 1]()
    indices = miner(x, y)
    ours, theirs = getattr(pairloss, loss_name)(), getattr(pml_losses, loss_name)()
    got, got_grad = _value_and_grad(ours, x, y, indices)
    expected, expected_grad = _value_and_grad(theirs, x, y, indices)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-7, atol=1e-9)
    keyword, _ = _value_and_grad(ours, x, y, indices_tuple=indices)
    assert keyword == got


@pytest.mark.parametrize("loss_name", sorted(set(LOSSES) - WITH_REFERENCE))
def test_mined_indices_against_a_reference_set_match_pml(loss_name: str) -> None:
    x, y = _batch(seed=3)
    rx, ry = _batch(17, seed=4)
    indices = miners.MultiSimilarityMiner()(x, y, rx, ry)
    ours, theirs = getattr(pairloss, loss_name)(), getattr(pml_losses, loss_name)()
    got, got_grad = _value_and_grad(ours, x, y, indices, rx, ry)
    expected, expected_grad = _value_and_grad(theirs, x, y, indices, rx, ry)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-7, atol=1e-9)


REDUCERS = {
    "mean": (reducers.MeanReducer, pml_reducers.MeanReducer),
    "sum": (reducers.SumReducer, pml_reducers.SumReducer),
    "avg_non_zero": (reducers.AvgNonZeroReducer, pml_reducers.AvgNonZeroReducer),
    "threshold": (lambda: reducers.ThresholdReducer(0.1, 1.0), lambda: pml_reducers.ThresholdReducer(0.1, 1.0)),
    "below": (lambda: reducers.ThresholdReducer(high=0.5), lambda: pml_reducers.ThresholdReducer(high=0.5)),
}


@pytest.mark.parametrize("loss_name", sorted(set(LOSSES) - {"NPairsLoss"}))
@pytest.mark.parametrize("reducer", sorted(REDUCERS))
@pytest.mark.parametrize("mined", [False, True])
def test_reducers_match_pml(loss_name: str, reducer: str, mined: bool) -> None:
    x, y = _batch(20, seed=5)
    indices = miners.TripletMarginMiner(0.3)(x, y) if mined else None
    ours_reducer, theirs_reducer = (make() for make in REDUCERS[reducer])
    ours = getattr(pairloss, loss_name)(reducer=ours_reducer)
    theirs = getattr(pml_losses, loss_name)(reducer=theirs_reducer)
    got, got_grad = _value_and_grad(ours, x, y, indices)
    expected, expected_grad = _value_and_grad(theirs, x, y, indices)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("loss_name", LOSSES)
def test_none_reducer_gives_pml_per_element_losses(loss_name: str) -> None:
    x, y = _batch(14, seed=6)
    for indices in (None, miners.MultiSimilarityMiner()(x, y)):
        got = getattr(pairloss, loss_name)(reducer="none")(x, y, indices)
        expected = getattr(pml_losses, loss_name)(reducer=pml_reducers.DoNothingReducer())(x, y, indices)
        for key, info in expected.items():
            if not isinstance(info["losses"], Tensor):  # PML's "zero loss" placeholder
                continue
            torch.testing.assert_close(got[key]["losses"], info["losses"].reshape(-1))
            got_indices, expected_indices = got[key]["indices"], info["indices"]
            if isinstance(expected_indices, Tensor):
                got_indices, expected_indices = (got_indices,), (expected_indices,)
            for a, b in zip(got_indices, expected_indices, strict=True):
                assert torch.equal(a, b)


@pytest.mark.parametrize("loss_name", ["ContrastiveLoss", "MultiSimilarityLoss", "NTXentLoss", "TripletMarginLoss"])
@pytest.mark.parametrize("with_miner", [False, True])
def test_cross_batch_memory_matches_pml(loss_name: str, with_miner: bool) -> None:
    ours = pairloss.CrossBatchMemory(
        getattr(pairloss, loss_name)(), 5, memory_size=40, miner=miners.MultiSimilarityMiner() if with_miner else None
    ).double()
    theirs = pml_losses.CrossBatchMemory(
        getattr(pml_losses, loss_name)(),
        5,
        memory_size=40,
        miner=pml_miners.MultiSimilarityMiner() if with_miner else None,
    ).double()
    for step in range(4):  # the queue wraps around at the third step
        x, y = _batch(16, seed=10 + step)
        extra = miners.BatchHardMiner()(x, y) if step == 0 else None  # at step 0 the batch is the queue's start
        got, got_grad = _value_and_grad(ours, x, y, extra)
        expected, expected_grad = _value_and_grad(theirs, x, y, extra)
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(ours.embedding_memory, theirs.embedding_memory)
    x, y = _batch(16, seed=20)
    mask = torch.arange(16) % 2 == 0
    assert float(ours(x, y, enqueue_mask=mask)) == pytest.approx(float(theirs(x, y, enqueue_mask=mask)), rel=1e-9)


def test_cross_batch_memory_rejects_bad_calls() -> None:
    memory = pairloss.CrossBatchMemory(pairloss.ContrastiveLoss(), 5, memory_size=8)
    x, y = _batch(10)
    with pytest.raises(ValueError, match="does not fit"):
        memory(x.float(), y)
    with pytest.raises(ValueError, match="features"):
        memory(x[:4, :3].float(), y[:4])
    with pytest.raises(ValueError, match="mutually exclusive"):
        memory(x[:4].float(), y[:4], (y[:1], y[:1], y[:1]), torch.ones(4, dtype=torch.bool))


def test_indices_tuple_errors_say_what_is_wrong() -> None:
    x, y = _batch(8)
    loss = pairloss.ContrastiveLoss()
    with pytest.raises(ValueError, match="ref_emb="):  # the old positional reference set
        loss(x, y, x, y)
    with pytest.raises(ValueError, match="3 tensors"):
        loss(x, y, (y, y))
    with pytest.raises(ValueError, match="equal lengths"):
        loss(x, y, (y[:2], y[:3], y[:2]))
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        loss(x, y, (torch.tensor([9]), torch.tensor([0]), torch.tensor([1])))
    with pytest.raises(ValueError, match="integer"):
        loss(x, y, (y.double(), y.double(), y.double()))
    with pytest.raises(ValueError, match="labels are required"):
        loss(x)
    with pytest.raises(ValueError, match="type_of_triplets"):
        miners.TripletMarginMiner(type_of_triplets="medium")
    with pytest.raises(ValueError, match="semihard"):
        miners.BatchEasyHardMiner("semihard", "semihard")


def test_miners_without_pairs_return_empty_tuples() -> None:
    x, _ = _batch(6)
    all_different = torch.arange(6)
    for name, (make, make_pml) in MINERS.items():
        got, expected = make()(x, all_different), make_pml()(x, all_different)
        assert [len(t) for t in got] == [len(t) for t in expected], name
    assert pairloss.ContrastiveLoss()(x, all_different, miners.MultiSimilarityMiner()(x, all_different)).item() == 0.0
