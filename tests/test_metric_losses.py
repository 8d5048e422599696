"""Metric-learning losses: equal to pytorch-metric-learning and to loop references; blocked == dense."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import pytorch_metric_learning.losses as pml_losses
import pytorch_metric_learning.miners as pml_miners
import torch
from pytorch_metric_learning.distances import CosineSimilarity as PMLCosineSimilarity
from pytorch_metric_learning.distances import LpDistance as PMLLpDistance
from torch import Tensor

import reference_loops as ref
from pairloss import builder, engine, functional, links, memory
from pairloss.engine import dense_row_sums
from pairloss.losses import metric
from pairloss.losses.metric import _common
from pairloss.similarity import CosineSimilarity, LpDistance

Loss = Callable[..., Tensor]


@dataclass(frozen=True)
class Case:
    """One loss configuration: ours, PML's, and the loop reference (on a ``ref.Pairs``)."""

    ours: Loss
    pml: Callable[[Tensor, Tensor, Tensor | None, Tensor | None], Tensor]
    loop: Callable[[ref.Pairs], float]
    score: str
    zero_without_positives: bool


def _pml(loss: torch.nn.Module, miner: torch.nn.Module | None = None) -> Callable[..., Tensor]:
    def run(x: Tensor, y: Tensor, rx: Tensor | None = None, ry: Tensor | None = None) -> Tensor:
        indices = None if miner is None else miner(x, y, rx, ry)
        return loss(x, y, indices, ref_emb=rx, ref_labels=ry)

    return run


def _with_reference(fn: Loss) -> Loss:
    """``fn`` called with the reference set positionally, as the cases are."""

    def call(x: Tensor, y: Tensor, rx: Tensor | None = None, ry: Tensor | None = None, **kw: object) -> Tensor:
        return fn(x, y, ref_emb=rx, ref_labels=ry, **kw)

    return call


CASES: dict[str, Case] = {
    "contrastive": Case(
        _with_reference(functional.contrastive_loss),
        _pml(pml_losses.ContrastiveLoss()),
        ref.contrastive,
        "euclidean",
        False,
    ),
    "contrastive_cosine": Case(
        lambda x, y, rx=None, ry=None, **kw: functional.contrastive_loss(
            x, y, ref_emb=rx, ref_labels=ry, pos_margin=0.8, neg_margin=0.3, distance=CosineSimilarity(), **kw
        ),
        _pml(pml_losses.ContrastiveLoss(pos_margin=0.8, neg_margin=0.3, distance=PMLCosineSimilarity())),
        lambda p: ref.contrastive(p, 0.8, 0.3),
        "cosine",
        False,
    ),
    "triplet_all": Case(
        lambda x, y, rx=None, ry=None, **kw: functional.triplet_margin_loss(
            x, y, ref_emb=rx, ref_labels=ry, margin=0.3, **kw
        ),
        _pml(pml_losses.TripletMarginLoss(margin=0.3)),
        lambda p: ref.triplet(p, 0.3),
        "euclidean",
        True,
    ),
    "triplet_cosine": Case(
        lambda x, y, rx=None, ry=None, **kw: functional.triplet_margin_loss(
            x, y, ref_emb=rx, ref_labels=ry, margin=0.3, distance=CosineSimilarity(), **kw
        ),
        _pml(pml_losses.TripletMarginLoss(margin=0.3, distance=PMLCosineSimilarity())),
        lambda p: ref.triplet(p, 0.3),
        "cosine",
        True,
    ),
    "triplet_smooth": Case(
        lambda x, y, rx=None, ry=None, **kw: functional.triplet_margin_loss(
            x, y, ref_emb=rx, ref_labels=ry, smooth_loss=True, **kw
        ),
        _pml(pml_losses.TripletMarginLoss(smooth_loss=True)),
        lambda p: ref.triplet(p, 0.05, smooth=True),
        "euclidean",
        True,
    ),
    "triplet_semihard": Case(
        lambda x, y, rx=None, ry=None, **kw: functional.triplet_margin_loss(
            x, y, ref_emb=rx, ref_labels=ry, margin=0.4, mining="semihard", **kw
        ),
        _pml(pml_losses.TripletMarginLoss(margin=0.4), pml_miners.TripletMarginMiner(0.4, "semihard")),
        lambda p: ref.triplet(p, 0.4, "semihard"),
        "euclidean",
        True,
    ),
    "triplet_semihard_cosine": Case(
        lambda x, y, rx=None, ry=None, **kw: functional.triplet_margin_loss(
            x, y, ref_emb=rx, ref_labels=ry, margin=0.25, mining="semihard", distance=CosineSimilarity(), **kw
        ),
        _pml(
            pml_losses.TripletMarginLoss(margin=0.25, distance=PMLCosineSimilarity()),
            pml_miners.TripletMarginMiner(0.25, "semihard", distance=PMLCosineSimilarity()),
        ),
        lambda p: ref.triplet(p, 0.25, "semihard"),
        "cosine",
        True,
    ),
    "triplet_batch_hard": Case(
        lambda x, y, rx=None, ry=None, **kw: functional.triplet_margin_loss(
            x, y, ref_emb=rx, ref_labels=ry, margin=0.3, mining="batch_hard", **kw
        ),
        _pml(pml_losses.TripletMarginLoss(margin=0.3), pml_miners.BatchHardMiner()),
        lambda p: ref.triplet(p, 0.3, "batch_hard"),
        "euclidean",
        True,
    ),
    "triplet_batch_hard_smooth_cosine": Case(
        lambda x, y, rx=None, ry=None, **kw: functional.triplet_margin_loss(
            x,
            y,
            ref_emb=rx,
            ref_labels=ry,
            margin=0.2,
            mining="batch_hard",
            smooth_loss=True,
            distance=CosineSimilarity(),
            **kw,
        ),
        _pml(
            pml_losses.TripletMarginLoss(margin=0.2, smooth_loss=True, distance=PMLCosineSimilarity()),
            pml_miners.BatchHardMiner(distance=PMLCosineSimilarity()),
        ),
        lambda p: ref.triplet(p, 0.2, "batch_hard", smooth=True),
        "cosine",
        True,
    ),
    "multi_similarity": Case(
        _with_reference(functional.multi_similarity_loss),
        _pml(pml_losses.MultiSimilarityLoss()),
        ref.multi_similarity,
        "cosine",
        False,
    ),
    "circle": Case(_with_reference(functional.circle_loss), _pml(pml_losses.CircleLoss()), ref.circle, "cosine", True),
    "generalized_lifted_structure": Case(
        _with_reference(functional.generalized_lifted_structure_loss),
        _pml(pml_losses.GeneralizedLiftedStructureLoss()),
        ref.generalized_lifted_structure,
        "euclidean",
        False,
    ),
    "ntxent": Case(_with_reference(functional.ntxent_loss), _pml(pml_losses.NTXentLoss()), ref.ntxent, "cosine", True),
    "supcon": Case(_with_reference(functional.supcon_loss), _pml(pml_losses.SupConLoss()), ref.supcon, "cosine", True),
    "generalized_lifted_structure_cosine": Case(
        lambda x, y, rx=None, ry=None, **kw: functional.generalized_lifted_structure_loss(
            x, y, ref_emb=rx, ref_labels=ry, distance=CosineSimilarity(), **kw
        ),
        _pml(pml_losses.GeneralizedLiftedStructureLoss(distance=PMLCosineSimilarity())),
        ref.generalized_lifted_structure,
        "cosine",
        False,
    ),
    "ntxent_distance": Case(
        lambda x, y, rx=None, ry=None, **kw: functional.ntxent_loss(
            x, y, ref_emb=rx, ref_labels=ry, temperature=0.5, distance=LpDistance(), **kw
        ),
        _pml(pml_losses.NTXentLoss(temperature=0.5, distance=PMLLpDistance())),
        lambda p: ref.ntxent(p, 0.5),
        "euclidean",
        True,
    ),
    "supcon_distance": Case(
        lambda x, y, rx=None, ry=None, **kw: functional.supcon_loss(
            x, y, ref_emb=rx, ref_labels=ry, temperature=0.5, distance=LpDistance(), **kw
        ),
        _pml(pml_losses.SupConLoss(temperature=0.5, distance=PMLLpDistance())),
        lambda p: ref.supcon(p, 0.5),
        "euclidean",
        True,
    ),
    "margin": Case(
        lambda x, y, rx=None, ry=None, **kw: functional.margin_loss(
            x, y, ref_emb=rx, ref_labels=ry, beta=torch.tensor([1.2], dtype=torch.float32), **kw
        ),
        _pml(pml_losses.MarginLoss()),
        lambda p: ref.margin(p, beta=[float(torch.tensor(1.2, dtype=torch.float32))]),
        "euclidean",
        True,
    ),
}


def _batch(n: int = 12, d: int = 4, classes: int = 3, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, dtype=torch.float64, generator=generator)
    y = torch.randint(0, classes, (n,), generator=generator)
    return x, y


def _value_and_grad(fn: Callable[..., Tensor], x: Tensor, *args: object, **kwargs: object) -> tuple[float, Tensor]:
    leaf = x.detach().clone().requires_grad_(True)
    loss = fn(leaf, *args, **kwargs)
    (grad,) = torch.autograd.grad(loss, leaf, allow_unused=True)
    return float(loss.detach()), torch.zeros_like(leaf) if grad is None else grad


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("with_reference", [False, True])
def test_matches_pml_value_and_gradient(name: str, with_reference: bool) -> None:
    case = CASES[name]
    x, y = _batch()
    rx, ry = _batch(7, seed=1) if with_reference else (None, None)
    ours, ours_grad = _value_and_grad(case.ours, x, y, rx, ry)
    theirs, theirs_grad = _value_and_grad(case.pml, x, y, rx, ry)
    assert ours > 0
    assert ours == pytest.approx(theirs, abs=1e-6, rel=1e-6)
    torch.testing.assert_close(ours_grad, theirs_grad, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("with_reference", [False, True])
def test_matches_loop_reference(name: str, with_reference: bool) -> None:
    case = CASES[name]
    x, y = _batch(10, seed=2)
    rx, ry = _batch(6, seed=3) if with_reference else (None, None)
    expected = case.loop(ref.Pairs(x, y, ref_emb=rx, ref_labels=ry, score=case.score))
    assert float(case.ours(x, y, rx, ry)) == pytest.approx(expected, abs=1e-9, rel=1e-9)


@pytest.mark.parametrize("name", sorted(set(CASES) - {"circle"}))
def test_gradcheck(name: str) -> None:
    """Circle loss treats its weights α_p, α_n as constants, so its gradient is checked against PML only."""
    x, y = _batch(7, 3, seed=4)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: CASES[name].ours(e, y), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("block_size", [1, 4])
def test_blocks_equal_dense(name: str, block_size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _batch(11, seed=5)
    rx, ry = _batch(8, seed=6)
    for args in [(x, y, None, None), (x, y, rx, ry)]:
        blocked, blocked_grad = _value_and_grad(CASES[name].ours, *args, block_size=block_size)
        with monkeypatch.context() as patch:
            for module in ENGINE_USERS:
                patch.setattr(module, "row_block_sums", _dense_engine)
            dense, dense_grad = _value_and_grad(CASES[name].ours, *args)
        assert blocked == pytest.approx(dense, abs=1e-6)
        torch.testing.assert_close(blocked_grad, dense_grad, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ["contrastive", "contrastive_cosine", "multi_similarity"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense-paths", "sparse-paths"])
def test_sparse_and_dense_paths_match_pml(name: str, sparse: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The losses with slopes take sparse shortcuts when few pairs are active or positive; both ways agree."""
    monkeypatch.setattr(engine, "SPARSE_SLOPE_DENSITY", 1.0 if sparse else 0.0)
    monkeypatch.setattr(links, "SPARSE_MASK_DENSITY", 1.0 if sparse else 0.0)
    case = CASES[name]
    x, y = _batch(16, classes=6, seed=7)
    for args in [(y, None, None), (y, *_batch(9, classes=6, seed=8))]:
        ours, ours_grad = _value_and_grad(case.ours, x, *args, block_size=5)
        theirs, theirs_grad = _value_and_grad(case.pml, x, *args)
        assert ours == pytest.approx(theirs, abs=1e-9, rel=1e-9)
        torch.testing.assert_close(ours_grad, theirs_grad, atol=1e-9, rtol=1e-8)
    leaf = x[:7].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: case.ours(e, y[:7], block_size=3), (leaf,), eps=1e-6, atol=1e-5)


#: The modules that call the engine for the metric losses (patched with the dense reference engine).
ENGINE_USERS = (builder, _common)


def _dense_engine(row_fn: Callable[..., Tensor], *args: object, **kwargs: object) -> Tensor:
    engine_only = ("block_size", "working_copies", "symmetric")
    kwargs = {k: v for k, v in kwargs.items() if k not in engine_only}
    return dense_row_sums(row_fn, *args, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_positive_pair(name: str) -> None:
    case = CASES[name]
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.arange(5)
    loss = case.ours(x, y)
    loss.backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    assert float(loss.detach()) == pytest.approx(float(case.pml(x.detach(), y, None, None)), abs=1e-9)
    if case.zero_without_positives:
        assert float(loss.detach()) == 0.0
        assert bool((x.grad == 0).all())


@pytest.mark.parametrize("name", sorted(CASES))
def test_single_class_and_single_sample(name: str) -> None:
    case = CASES[name]
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    one_class = torch.zeros(6, dtype=torch.long)
    loss = case.ours(x, one_class)
    loss.backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    assert float(loss.detach()) == pytest.approx(float(case.pml(x.detach(), one_class, None, None)), abs=1e-9)
    single = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)
    loss = case.ours(single, torch.zeros(1, dtype=torch.long))
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert single.grad is not None and bool((single.grad == 0).all())


@pytest.mark.parametrize("name", sorted(CASES))
def test_invalid_inputs(name: str) -> None:
    fn = CASES[name].ours
    x, y = _batch(6)
    with pytest.raises(ValueError, match="NaN or infinite"):
        fn(x.masked_fill(torch.eye(6, 4, dtype=torch.bool), float("nan")), y)
    with pytest.raises(ValueError, match="NaN or infinite"):
        fn(x.masked_fill(torch.eye(6, 4, dtype=torch.bool), float("inf")), y)
    with pytest.raises(ValueError, match="2 dimensions"):
        fn(x[0], y)
    with pytest.raises(ValueError, match="floating-point"):
        fn(x.long(), y)
    with pytest.raises(ValueError, match="entries"):
        fn(x, y[:4])
    with pytest.raises(ValueError, match="integer class ids"):
        fn(x, y.double())
    with pytest.raises(ValueError, match="features"):
        fn(x, y, torch.randn(3, 5, dtype=torch.float64), y[:3])
    with pytest.raises(ValueError, match="together"):
        fn(x, y, x, None)


def test_multi_hot_labels_share_a_label() -> None:
    x, _ = _batch(8)
    multi_hot = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [1, 0, 1], [0, 1, 0], [0, 0, 1]])
    expected = ref.multi_similarity(ref.Pairs(x, multi_hot, score="cosine"))
    assert float(functional.multi_similarity_loss(x, multi_hot)) == pytest.approx(expected, abs=1e-9)
    expected = ref.triplet(ref.Pairs(x, multi_hot), 0.3)
    assert float(functional.triplet_margin_loss(x, multi_hot, margin=0.3)) == pytest.approx(expected, abs=1e-9)


def test_generic_pair_rule_one_positive_and_one_negative_pair() -> None:
    x = torch.randn(1, 4, dtype=torch.float64)
    rx = torch.randn(2, 4, dtype=torch.float64)
    y, ry = torch.tensor([0]), torch.tensor([0, 1])
    for fn in (functional.multi_similarity_loss, functional.generalized_lifted_structure_loss):
        assert float(fn(x, y, ref_emb=rx, ref_labels=ry)) == 0.0
    assert float(pml_losses.MultiSimilarityLoss()(x, y, ref_emb=rx, ref_labels=ry)) == 0.0


def test_triplet_all_scales_without_cubic_memory() -> None:
    x, y = _batch(400, 8, classes=10, seed=7)
    loss = functional.triplet_margin_loss(x.float(), y, block_size=64)
    assert torch.isfinite(loss)
    small = functional.triplet_margin_loss(x[:40], y[:40])
    assert float(small) == pytest.approx(float(pml_losses.TripletMarginLoss()(x[:40], y[:40])), abs=1e-9)


@pytest.mark.parametrize("margin", [0.0, -0.2])
def test_triplet_non_positive_margin(margin: float) -> None:
    # no triplet is semi-hard; "all" keeps the triplets whose negative is more than |m| closer than the positive
    x, y = _batch(14, seed=9)
    x.requires_grad_(True)
    semihard = functional.triplet_margin_loss(x, y, margin=margin, mining="semihard")
    semihard.backward()
    assert semihard.item() == 0.0 and x.grad is not None and not bool(x.grad.any())
    expected = ref.triplet(ref.Pairs(x.detach(), y), margin)
    assert functional.triplet_margin_loss(x, y, margin=margin).item() == pytest.approx(expected, rel=1e-9)
    assert torch.autograd.gradcheck(lambda e: functional.triplet_margin_loss(e, y, margin=margin), (x,))


@pytest.mark.parametrize("mining", ["all", "semihard"])
def test_smooth_triplets_in_chunks_of_one_positive(mining: str, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _batch(16, seed=10)
    whole, whole_grad = _value_and_grad(
        functional.triplet_margin_loss, x, y, margin=0.5, smooth_loss=True, mining=mining
    )
    assert whole == pytest.approx(ref.triplet(ref.Pairs(x, y), 0.5, mining, smooth=True), rel=1e-12)
    monkeypatch.setattr(memory, "MAX_TEMPORARY_BYTES", 1)  # one positive per chunk
    loss = functional.triplet_margin_loss
    chunked, chunked_grad = _value_and_grad(loss, x, y, margin=0.5, smooth_loss=True, mining=mining)
    assert chunked == pytest.approx(whole, rel=1e-12)
    torch.testing.assert_close(chunked_grad, whole_grad, rtol=1e-10, atol=1e-12)
    leaf = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: loss(e, y, margin=0.5, smooth_loss=True, mining=mining), (leaf,))


def test_triplet_rejects_unsupported_options() -> None:
    x, y = _batch(6)
    with pytest.raises(ValueError, match="swap"):
        functional.triplet_margin_loss(x, y, swap=True)
    with pytest.raises(ValueError, match="triplets_per_anchor"):
        functional.triplet_margin_loss(x, y, triplets_per_anchor=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mining"):
        metric.TripletMarginLoss(mining="hardest")
    with pytest.raises(ValueError, match="similarity"):
        metric.CircleLoss(distance=LpDistance())


def test_npairs_matches_pml_and_reference() -> None:
    x, y = _batch(12, seed=8)
    ours, ours_grad = _value_and_grad(functional.npairs_loss, x, y)
    theirs, theirs_grad = _value_and_grad(lambda e, lab: pml_losses.NPairsLoss()(e, lab), x, y)
    assert ours == pytest.approx(theirs, abs=1e-9)
    torch.testing.assert_close(ours_grad, theirs_grad)
    assert ours == pytest.approx(ref.npairs(x, y), abs=1e-9)
    small = x[:8].detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: functional.npairs_loss(e, y[:8]), (small,), fast_mode=True)
    assert metric.NPairsLoss()(x, y).item() == pytest.approx(ours)


def test_npairs_edge_cases() -> None:
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    loss = functional.npairs_loss(x, torch.arange(4))
    loss.backward()
    assert float(loss.detach()) == 0.0 and x.grad is not None and bool((x.grad == 0).all())
    assert float(functional.npairs_loss(x[:1], torch.zeros(1, dtype=torch.long)).detach()) == 0.0
    with pytest.raises(ValueError, match="reference set"):
        metric.NPairsLoss()(x, torch.arange(4), x, torch.arange(4))
    with pytest.raises(ValueError, match="multi-hot"):
        functional.npairs_loss(x, torch.eye(4, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        functional.npairs_loss(torch.full((4, 3), float("nan")), torch.arange(4))


@pytest.mark.parametrize("num_classes", [None, 3])
def test_margin_loss_learnable_beta_matches_pml(num_classes: int | None) -> None:
    x, y = _batch(12, seed=9)
    ours = metric.MarginLoss(learn_beta=True, nu=0.1, num_classes=num_classes).double()
    theirs = pml_losses.MarginLoss(learn_beta=True, nu=0.1, num_classes=num_classes)
    theirs.beta.data = theirs.beta.data.double()
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    value, expected = ours(a, y), theirs(b, y)
    value.backward()
    expected.backward()
    assert float(value.detach()) == pytest.approx(float(expected.detach()), abs=1e-9)
    assert ours.beta.grad is not None and theirs.beta.grad is not None
    torch.testing.assert_close(ours.beta.grad, theirs.beta.grad)
    torch.testing.assert_close(a.grad, b.grad)
    beta = [float(v) for v in ours.beta.detach()]
    assert float(value.detach()) == pytest.approx(ref.margin(ref.Pairs(x, y), beta=beta, nu=0.1), abs=1e-9)
    beta_leaf = ours.beta.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda b_: functional.margin_loss(x, y, beta=b_, nu=0.1), (beta_leaf,))


def test_modules_equal_functions() -> None:
    x, y = _batch(10, seed=10)
    pairs = [
        (metric.ContrastiveLoss(), functional.contrastive_loss),
        (
            metric.TripletMarginLoss(mining="batch_hard"),
            lambda e, lab: functional.triplet_margin_loss(e, lab, mining="batch_hard"),
        ),
        (metric.MultiSimilarityLoss(), functional.multi_similarity_loss),
        (metric.CircleLoss(), functional.circle_loss),
        (metric.GeneralizedLiftedStructureLoss(), functional.generalized_lifted_structure_loss),
        (metric.NTXentLoss(), functional.ntxent_loss),
        (metric.SupConLoss(), functional.supcon_loss),
        (metric.MarginLoss(), lambda e, lab: functional.margin_loss(e, lab, beta=metric.MarginLoss().beta)),
    ]
    for module, fn in pairs:
        assert float(module(x, y)) == pytest.approx(float(fn(x, y)), abs=1e-12)
        assert module.formula and module.paper and module.family == "metric"


def test_float32_matches_pml() -> None:
    x, y = _batch(64, 16, classes=6, seed=11)
    x32 = x.float()
    for name in ("contrastive", "multi_similarity", "triplet_all", "supcon"):
        ours = float(CASES[name].ours(x32, y))
        theirs = float(CASES[name].pml(x32, y, None, None))
        assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("block_size", [None, 1, 4])
def test_lifted_structure_matches_pml_reference_and_dense(block_size: int | None) -> None:
    x, y = _batch(12, seed=12)
    ours, ours_grad = _value_and_grad(functional.lifted_structure_loss, x, y, block_size=block_size)
    theirs, theirs_grad = _value_and_grad(lambda e, lab: pml_losses.LiftedStructureLoss()(e, lab), x, y)
    assert ours > 0
    assert ours == pytest.approx(theirs, abs=1e-9, rel=1e-9)
    torch.testing.assert_close(ours_grad, theirs_grad)
    assert ours == pytest.approx(ref.lifted_structure(ref.Pairs(x, y)), abs=1e-9, rel=1e-9)


def test_lifted_structure_gradcheck_and_edges() -> None:
    x, y = _batch(7, 3, seed=13)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: functional.lifted_structure_loss(e, y, block_size=3), (x,))
    module = metric.LiftedStructureLoss(neg_margin=0.3, pos_margin=0.8, distance=CosineSimilarity())
    pml = pml_losses.LiftedStructureLoss(neg_margin=0.3, pos_margin=0.8, distance=PMLCosineSimilarity())
    assert float(module(x, y).detach()) == pytest.approx(float(pml(x.detach(), y)), abs=1e-9)
    for labels in (torch.arange(7), torch.zeros(7, dtype=torch.long)):  # no positive pair; one class
        leaf = x.detach().clone().requires_grad_(True)
        loss = functional.lifted_structure_loss(leaf, labels)
        loss.backward()
        assert float(loss.detach()) == 0.0 and leaf.grad is not None and bool((leaf.grad == 0).all())
    assert float(functional.lifted_structure_loss(x[:1], y[:1]).detach()) == 0.0
    with pytest.raises(ValueError, match="reference set"):
        module(x, y, x, y)
    with pytest.raises(ValueError, match="NaN"):
        functional.lifted_structure_loss(torch.full((3, 2), float("nan")), torch.arange(3))
