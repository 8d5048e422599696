"""Retrieval metrics: hand-worked examples, a loop-over-neighbours reference, and equality with PML."""

from __future__ import annotations

import math
from collections.abc import Iterator

import faiss
import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from pairloss.metrics import retrieval, retrieval_per_query

PML_NAMES = {
    "recall@1": "precision_at_1",
    "map@r": "mean_average_precision_at_r",
    "r_precision": "r_precision",
}


def _clustered(n: int, classes: int, dim: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=generator)
    labels = torch.randint(0, classes, (n,), generator=generator)
    return centres[labels] + spread * torch.randn(n, dim, generator=generator), labels


@pytest.fixture(autouse=True)
def _one_faiss_thread() -> Iterator[None]:
    """PML's searches are tiny here; on a busy machine faiss's OpenMP start-up would dominate them."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def _pml(query, query_labels, reference=None, reference_labels=None, **kwargs) -> dict[str, float]:
    calculator = AccuracyCalculator(
        include=tuple(PML_NAMES.values()), k="max_bin_count", device=torch.device("cpu"), **kwargs
    )
    return calculator.get_accuracy(query, query_labels, reference, reference_labels)


def _reference_metrics(query, query_labels, reference, reference_labels, ks, metric, exclude_self):
    """Slow reference straight from the definitions: sort every reference for every query in Python loops."""
    if metric == "cosine":
        query, reference = F.normalize(query, dim=1), F.normalize(reference, dim=1)
    per_query: dict[str, list[float]] = {}
    for i in range(query.shape[0]):
        scored = []
        for j in range(reference.shape[0]):
            if exclude_self and i == j:
                continue
            if metric == "l2":
                score = -float(((query[i] - reference[j]) ** 2).sum())
            else:
                score = float((query[i] * reference[j]).sum())
            scored.append((score, j))
        ranking = [j for _, j in sorted(scored, key=lambda item: -item[0])]
        rel = [int(reference_labels[j] == query_labels[i]) for j in ranking]
        r = sum(rel)
        if r == 0:
            continue
        values = {f"recall@{k}": float(any(rel[:k])) for k in ks}
        values.update({f"precision@{k}": sum(rel[:k]) / k for k in ks})
        values["r_precision"] = sum(rel[:r]) / r
        values["map@r"] = sum(rel[i] * sum(rel[: i + 1]) / (i + 1) for i in range(r)) / r
        for name, value in values.items():
            per_query.setdefault(name, []).append(value)
    return {name: sum(values) / len(values) for name, values in per_query.items()}


def test_hand_worked_query_equals_gallery() -> None:
    # points on a line; the last one is alone in its class and must be left out
    x = torch.tensor([[0.0], [1.0], [10.0], [11.0], [5.8], [100.0]])
    y = torch.tensor([0, 0, 1, 1, 0, 2])
    got = retrieval(x, y, k=(1, 2, 4), metric="l2")
    # neighbour relevance per query: [1,1,0,0] R=2; [1,1,0,0] R=2; [1,0,..] R=1; [1,0,..] R=1; [0,1,0,1] R=2
    assert got["recall@1"] == pytest.approx(0.8)
    assert got["recall@2"] == pytest.approx(1.0)
    assert got["recall@4"] == pytest.approx(1.0)
    assert got["precision@2"] == pytest.approx(0.7)
    assert got["precision@4"] == pytest.approx((0.5 + 0.5 + 0.25 + 0.25 + 0.5) / 5)
    assert got["r_precision"] == pytest.approx((1 + 1 + 1 + 1 + 0.5) / 5)
    assert got["map@r"] == pytest.approx((1 + 1 + 1 + 1 + 0.25) / 5)
    per_query = retrieval_per_query(x, y, k=(1, 2, 4), metric="l2")
    assert per_query["map@r"][4].item() == pytest.approx(0.25)
    assert math.isnan(per_query["map@r"][5].item())


def test_hand_worked_separate_gallery() -> None:
    query, query_labels = torch.tensor([[0.0]]), torch.tensor([0])
    gallery, gallery_labels = torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([1, 0, 0])
    got = retrieval(query, query_labels, gallery, gallery_labels, k=(1, 2, 3), metric="l2")
    assert got["recall@1"] == 0.0
    assert got["recall@2"] == 1.0
    assert got["precision@3"] == pytest.approx(2 / 3)
    assert got["r_precision"] == pytest.approx(0.5)
    # MAP@R stops at rank R = 2: only the hit at rank 2 (precision 1/2) counts
    assert got["map@r"] == pytest.approx(0.25)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("separate", [False, True])
def test_matches_loop_reference(metric: str, separate: bool) -> None:
    x, y = _clustered(70, 6, 5, spread=1.0, seed=1)
    if separate:
        args = (x[:25], y[:25], x[25:], y[25:])
    else:
        args = (x, y, x, y)
    got = retrieval(*args[:2], *((args[2], args[3]) if separate else (None, None)), k=(1, 3, 5), metric=metric)
    expected = _reference_metrics(*args, ks=(1, 3, 5), metric=metric, exclude_self=not separate)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize("spread", [0.0, 0.7, 3.0], ids=["random", "clustered", "overlapping"])
@pytest.mark.parametrize("separate", [False, True])
@pytest.mark.parametrize("avg_of_avgs", [False, True])
def test_matches_pml_accuracy_calculator(spread: float, separate: bool, avg_of_avgs: bool) -> None:
    if spread == 0.0:  # no class structure at all: labels independent of the embeddings
        x = torch.randn(600, 32, generator=torch.Generator().manual_seed(3))
        y = torch.randint(0, 12, (600,), generator=torch.Generator().manual_seed(4))
    else:
        x, y = _clustered(600, 12, 32, spread=spread, seed=5)
    if separate:
        args: tuple = (x[:200], y[:200], x[200:], y[200:])
    else:
        args = (x, y)
    expected = _pml(*args, avg_of_avgs=avg_of_avgs)
    got = retrieval(*args, metric="l2", avg_of_avgs=avg_of_avgs)
    for ours, theirs in PML_NAMES.items():
        assert got[ours] == pytest.approx(expected[theirs], abs=1e-9), ours


def test_matches_pml_with_lone_classes_and_ref_includes_query() -> None:
    x, y = _clustered(300, 20, 16, spread=1.0, seed=7)
    y[:3] = torch.tensor([100, 101, 102])  # three classes with a single sample
    expected = _pml(x, y)
    got = retrieval(x, y, metric="l2")
    for ours, theirs in PML_NAMES.items():
        assert got[ours] == pytest.approx(expected[theirs], abs=1e-9), ours
    # queries that are the first rows of a larger reference set, as PML's ref_includes_query
    extra, extra_labels = _clustered(100, 20, 16, spread=1.0, seed=8)
    reference, reference_labels = torch.cat([x, extra]), torch.cat([y, extra_labels])
    calculator = AccuracyCalculator(include=tuple(PML_NAMES.values()), k="max_bin_count", device=torch.device("cpu"))
    expected = calculator.get_accuracy(x, y, reference, reference_labels, ref_includes_query=True)
    got = retrieval(x, y, reference, reference_labels, metric="l2", ref_includes_query=True)
    for ours, theirs in PML_NAMES.items():
        assert got[ours] == pytest.approx(expected[theirs], abs=1e-9), ours


def test_recall_at_k_matches_pml_neighbour_lists() -> None:
    # PML has no recall@k for k > 1 in its calculator; compare with its precision_at_k building block instead
    from pytorch_metric_learning.utils.accuracy_calculator import precision_at_k
    from pytorch_metric_learning.utils.inference import FaissKNN

    x, y = _clustered(400, 10, 8, spread=1.2, seed=9)
    _, indices = FaissKNN()(x, 8, x, ref_includes_query=True)
    knn_labels = y[indices]
    got = retrieval(x, y, k=(1, 2, 4, 8), metric="l2")
    for k in (1, 2, 4, 8):
        precision = precision_at_k(knn_labels, y[:, None], k, False, False, torch.eq)
        recall = (knn_labels[:, :k] == y[:, None]).any(dim=1).double().mean().item()
        assert got[f"precision@{k}"] == pytest.approx(precision, abs=1e-12)
        assert got[f"recall@{k}"] == pytest.approx(recall, abs=1e-12)


def test_chunking_does_not_change_the_result() -> None:
    x, y = _clustered(500, 8, 16, spread=1.0, seed=11)
    whole = retrieval_per_query(x, y, metric="cosine")
    chunked = retrieval_per_query(x, y, metric="cosine", memory_budget=48 * 80 * 90)
    for name in whole:
        assert torch.allclose(chunked[name], whole[name], equal_nan=True), name


def test_cosine_ignores_scale_and_l2_agrees_on_normalised() -> None:
    x, y = _clustered(200, 5, 8, spread=1.0, seed=12)
    scale = torch.rand(200, 1) * 10 + 0.1
    assert retrieval(x * scale, y) == retrieval(x, y)
    assert retrieval(F.normalize(x, dim=1), y, metric="l2") == pytest.approx(retrieval(x, y, metric="cosine"))


def test_all_queries_lone_give_nan() -> None:
    x = torch.randn(4, 3)
    with pytest.warns(RuntimeWarning, match="no query has a reference with its label"):
        got = retrieval(x, torch.arange(4), k=1)
    assert all(math.isnan(value) for value in got.values())


def test_one_class_is_perfect() -> None:
    got = retrieval(torch.randn(10, 4), torch.zeros(10, dtype=torch.long), k=(1, 9))
    assert all(value == pytest.approx(1.0) for value in got.values())


def test_float64_input_and_per_query_device() -> None:
    x, y = _clustered(50, 3, 4, spread=0.5, seed=13)
    per_query = retrieval_per_query(x.double(), y)
    assert per_query["recall@1"].device == x.device
    assert per_query["recall@1"].shape == (50,)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x, y: retrieval(x[0], y), "2 dimensions"),
        (lambda x, y: retrieval(x.long(), y), "floating-point"),
        (lambda x, y: retrieval(x.masked_fill(x > 1, math.nan), y), "NaN or infinite"),
        (lambda x, y: retrieval(x.masked_fill(x > 1, math.inf), y), "NaN or infinite"),
        (lambda x, y: retrieval(x, y[:5]), "entries"),
        (lambda x, y: retrieval(x, y.float()), "integer class ids"),
        (lambda x, y: retrieval(x, y[:, None].expand(-1, 2)), "1-D integer class ids"),
        (lambda x, y: retrieval(x, y, x), "given together"),
        (lambda x, y: retrieval(x, y, x[:, :2], y), "features"),
        (lambda x, y: retrieval(x, y, k=(1, 20)), "exceeds"),
        (lambda x, y: retrieval(x, y, k=0), "positive int"),
        (lambda x, y: retrieval(x, y, k=()), "positive int"),
        (lambda x, y: retrieval(x, y, metric="dot"), "metric must be one of"),
        (lambda x, y: retrieval(x[:1], y[:1]), "exceeds"),
        (lambda x, y: retrieval(x[:0], y[:0]), "empty"),
        (lambda x, y: retrieval(x, y, memory_budget=0), "memory_budget"),
        (lambda x, y: retrieval(x.tolist(), y), "torch.Tensor"),
    ],
)
def test_invalid_inputs_raise(call, message: str) -> None:
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    with pytest.raises(ValueError, match=message):
        call(x, y)


@pytest.mark.slow
def test_hundred_thousand_queries_in_bounded_memory() -> None:
    import resource

    x, y = _clustered(100_000, 100, 128, spread=1.0, seed=14)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    got = retrieval(x, y, memory_budget=128 * 2**20)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert all(0.0 <= value <= 1.0 for value in got.values())
    assert grown_kib < 1.5 * 2**20  # well under the 100k × 1000 neighbour lists (~1.2 GB of indices alone)
