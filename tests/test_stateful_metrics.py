"""Stateful metrics: batches (and 2 gloo ranks) accumulated equal the functional metric on the concatenation."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from gloo_ranks import run_on_ranks
from pairloss import metrics as M
from pairloss.metrics.stateful import Field, Metric

#: Rows of each batch; the first two batches go to rank 0 and the last two to rank 1 in the 2-rank test.
SIZES = (7, 4, 9, 6)
N = sum(SIZES)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cuts() -> list[slice]:
    edges = np.cumsum((0, *SIZES))
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]


# ---------------------------------------------------------------- data: the whole set, and its batches

EMB = torch.randn(N, 6, generator=_generator(1), dtype=torch.float64)
CLASSES = torch.randint(0, 4, (N,), generator=_generator(2))
GALLERY = torch.randn(15, 6, generator=_generator(3), dtype=torch.float64)
GALLERY_CLASSES = torch.randint(0, 4, (15,), generator=_generator(4))
SCORES = torch.randn(N, generator=_generator(5), dtype=torch.float64)
CLICKS = (torch.rand(N, generator=_generator(6)) < 0.4).double()
CLICKS[:2] = torch.tensor([0.0, 1.0])
GROUPS = torch.randint(0, 6, (N,), generator=_generator(7))  # query groups span batches
PROBS = torch.rand(N, generator=_generator(8), dtype=torch.float64)
LABEL_SCORES = torch.randn(N, 5, generator=_generator(9), dtype=torch.float64)
MULTI_HOT = (torch.rand(N, 5, generator=_generator(10)) < 0.4).long()
CODES = torch.randn(N, 12, generator=_generator(11))
DB_CODES = torch.randn(20, 12, generator=_generator(12))
DB_CLASSES = torch.randint(0, 4, (20,), generator=_generator(13))
# padded lists: batch b has lists of LENGTHS[b] items, the longest batch sets L = 7; relevance -1 beyond each length
LENGTHS = (5, 7, 4, 6)
LIST_SCORES = torch.randn(N, 7, generator=_generator(14), dtype=torch.float64)
LIST_REL = torch.randint(0, 4, (N, 7), generator=_generator(15)).double()
for _cut, _length in zip(_cuts(), LENGTHS, strict=True):
    LIST_REL[_cut, _length:] = -1.0
    LIST_SCORES[_cut, _length:] = 0.0


def _lists(b: slice, i: int) -> tuple[torch.Tensor, ...]:
    return LIST_SCORES[b, : LENGTHS[i]], LIST_REL[b, : LENGTHS[i]]


#: name -> (metric, the arguments of batch i, the functional metric on the whole set)
Case = tuple[Callable[[], Metric], Callable[[slice, int], tuple[Any, ...]], Callable[[], Any]]
CASES: dict[str, Case] = {
    "retrieval-self": (
        lambda: M.RetrievalMetrics(k=(1, 3)),
        lambda b, i: (EMB[b], CLASSES[b]),
        lambda: M.retrieval(EMB, CLASSES, k=(1, 3)),
    ),
    "recall@2": (
        lambda: M.RecallAtK(2),
        lambda b, i: (EMB[b], CLASSES[b]),
        lambda: M.retrieval(EMB, CLASSES, k=2)["recall@2"],
    ),
    "map@r": (lambda: M.MAPAtR(), lambda b, i: (EMB[b], CLASSES[b]), lambda: M.retrieval(EMB, CLASSES, k=1)["map@r"]),
    "r-precision": (
        lambda: M.RPrecision(metric="l2"),
        lambda b, i: (EMB[b], CLASSES[b]),
        lambda: M.retrieval(EMB, CLASSES, k=1, metric="l2")["r_precision"],
    ),
    "ndcg-lists": (lambda: M.NDCG(k=3), _lists, lambda: M.ndcg_at_k(LIST_SCORES, LIST_REL, k=3)),
    "ndcg-groups": (
        lambda: M.NDCG(k=2, empty="zero"),
        lambda b, i: (SCORES[b], CLICKS[b] * 2, GROUPS[b]),
        lambda: M.ndcg_at_k(SCORES, CLICKS * 2, GROUPS, k=2, empty="zero"),
    ),
    "mrr-lists": (lambda: M.MRR(), _lists, lambda: M.mrr(LIST_SCORES, LIST_REL)),
    "map-lists": (lambda: M.MAP(), _lists, lambda: M.mean_average_precision(LIST_SCORES, LIST_REL)),
    "auc": (lambda: M.AUC(), lambda b, i: (SCORES[b], CLICKS[b]), lambda: M.auc(SCORES, CLICKS)),
    "gauc": (lambda: M.GAUC(), lambda b, i: (SCORES[b], CLICKS[b], GROUPS[b]), lambda: M.gauc(SCORES, CLICKS, GROUPS)),
    "logloss": (
        lambda: M.LogLoss(eps=1e-6),
        lambda b, i: (PROBS[b], CLICKS[b]),
        lambda: M.log_loss(PROBS, CLICKS, eps=1e-6),
    ),
    "ece": (lambda: M.ECE(n_bins=5), lambda b, i: (PROBS[b], CLICKS[b]), lambda: M.ece(PROBS, CLICKS, n_bins=5)),
    "pcoc": (lambda: M.PCOC(), lambda b, i: (PROBS[b].numpy(), CLICKS[b].numpy()), lambda: M.pcoc(PROBS, CLICKS)),
    "multilabel-report": (
        lambda: M.MultiLabelReport(threshold=0.1),
        lambda b, i: (LABEL_SCORES[b], MULTI_HOT[b]),
        lambda: M.multilabel_report(LABEL_SCORES, MULTI_HOT, threshold=0.1),
    ),
    "ranking-loss": (
        lambda: M.RankingLoss(convention="paper"),
        lambda b, i: (LABEL_SCORES[b], MULTI_HOT[b]),
        lambda: M.ranking_loss(LABEL_SCORES, MULTI_HOT, convention="paper"),
    ),
    "coverage": (
        lambda: M.Coverage(),
        lambda b, i: (LABEL_SCORES[b], MULTI_HOT[b]),
        lambda: M.coverage(LABEL_SCORES, MULTI_HOT),
    ),
    "one-error": (
        lambda: M.OneError(),
        lambda b, i: (LABEL_SCORES[b], MULTI_HOT[b]),
        lambda: M.one_error(LABEL_SCORES, MULTI_HOT),
    ),
    "lrap": (
        lambda: M.LabelRankingAveragePrecision(),
        lambda b, i: (LABEL_SCORES[b], MULTI_HOT[b]),
        lambda: M.label_ranking_average_precision(LABEL_SCORES, MULTI_HOT),
    ),
}

#: Metrics with a second set (gallery, database), fed in batches of their own: name -> (metric, feed, expected).
TwoSetCase = tuple[Callable[[], Metric], Callable[[Metric, slice, int], None], Callable[[], Any]]


def _feed_gallery(metric: Any, b: slice, i: int) -> None:
    metric.update(EMB[b], CLASSES[b])
    metric.update_reference(GALLERY[i * 4 : (i + 1) * 4], GALLERY_CLASSES[i * 4 : (i + 1) * 4])


def _feed_database(metric: Any, b: slice, i: int) -> None:
    metric.update(CODES[b], CLASSES[b])
    metric.update_database(DB_CODES[i * 5 : (i + 1) * 5], DB_CLASSES[i * 5 : (i + 1) * 5])


TWO_SET_CASES: dict[str, TwoSetCase] = {
    "retrieval-gallery": (
        lambda: M.RetrievalMetrics(k=(1, 2)),
        _feed_gallery,
        lambda: M.retrieval(EMB, CLASSES, GALLERY[:15], GALLERY_CLASSES[:15], k=(1, 2)),
    ),
    "hamming-map": (
        lambda: M.HammingMAP(top_k=10),
        _feed_database,
        lambda: M.hamming_map(M.hamming_ranking(CODES, CLASSES, DB_CODES, DB_CLASSES), top_k=10),
    ),
}


def _same(got: Any, expected: Any) -> None:
    if isinstance(expected, dict):
        assert got.keys() == expected.keys()
        for key in expected:
            _same(got[key], expected[key])
        return
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-14) or (math.isnan(got) and math.isnan(expected))


def _accumulate(name: str, batches: list[int]) -> Metric:
    cuts = _cuts()
    if name in CASES:
        make, batch, _ = CASES[name]
        metric = make()
        for i in batches:
            metric.update(*batch(cuts[i], i))
        return metric
    make2, feed, _ = TWO_SET_CASES[name]
    metric = make2()
    for i in batches:
        feed(metric, cuts[i], i)
    return metric


def _expected(name: str) -> Any:
    return CASES[name][2]() if name in CASES else TWO_SET_CASES[name][2]()


ALL = [*CASES, *TWO_SET_CASES]


@pytest.mark.parametrize("name", ALL)
def test_batches_accumulated_equal_the_functional_metric_on_the_concatenation(name: str) -> None:
    metric = _accumulate(name, [0, 1, 2, 3])
    _same(metric.compute(), _expected(name))
    metric.reset()
    with pytest.raises(ValueError, match="no data"):
        metric.compute()


def test_the_split_changes_the_value() -> None:
    # the concatenation is not the mean of the per-batch values (groups span batches, neighbours come from other
    # batches), so the test above can fail
    for name in ("map@r", "ndcg-groups", "gauc", "ece", "ranking-loss", "hamming-map"):
        whole = _accumulate(name, [0, 1, 2, 3]).compute()
        parts = [_accumulate(name, [i]).compute() for i in range(4)]
        assert whole != pytest.approx(sum(p * s for p, s in zip(parts, SIZES, strict=True)) / N), name


def test_forward_returns_the_batch_value_and_accumulates() -> None:
    metric = M.GAUC()
    cuts = _cuts()
    first = metric(SCORES[cuts[0]], CLICKS[cuts[0]], GROUPS[cuts[0]])
    assert first == M.gauc(SCORES[cuts[0]], CLICKS[cuts[0]], GROUPS[cuts[0]])
    metric(SCORES[cuts[1]], CLICKS[cuts[1]], group_ids=GROUPS[cuts[1]])
    both = slice(0, SIZES[0] + SIZES[1])
    assert metric.compute() == M.gauc(SCORES[both], CLICKS[both], GROUPS[both])


def test_input_errors() -> None:
    with pytest.raises(TypeError, match="no option"):
        M.NDCG(kk=3)
    with pytest.raises(ValueError, match="top_k"):
        M.HammingMAP(top_k=0)
    metric = M.MultiLabelReport()
    metric.update(LABEL_SCORES[:3], MULTI_HOT[:3])
    metric.update(LABEL_SCORES[:3, :4], MULTI_HOT[:3, :4])
    with pytest.raises(ValueError, match="scores must keep its shape beyond the first axis"):
        metric.compute()
    with pytest.raises(ValueError, match="same number of rows"):
        metric.update(LABEL_SCORES[:3], MULTI_HOT[:4])
    with pytest.raises(TypeError, match="missing 'labels'"):
        metric.update(LABEL_SCORES[:3])
    with pytest.raises(TypeError, match="takes"):
        metric.update(LABEL_SCORES[:3], MULTI_HOT[:3], MULTI_HOT[:3])
    ndcg = M.NDCG()
    ndcg.update(SCORES[:4], CLICKS[:4], GROUPS[:4])
    with pytest.raises(ValueError, match="group_ids must be given in every batch or in none"):
        ndcg.update(SCORES[:4], CLICKS[:4])
    with pytest.raises(ValueError, match="scalar"):
        M.AUC().update(torch.tensor(0.5), torch.tensor(1.0))
    with pytest.raises(ValueError, match="needs a database"):
        hamming = M.HammingMAP()
        hamming.update(CODES[:3], CLASSES[:3])
        hamming.compute()
    # the functional metric's own checks run at compute
    bad = M.LogLoss()
    bad.update(PROBS[:3] + 2, CLICKS[:3])
    with pytest.raises(ValueError, match="probabilities"):
        bad.compute()


def test_a_metric_of_your_own_from_the_base_class() -> None:
    class MeanScore(Metric):
        fields = (Field("scores"),)

        def evaluate(self, **inputs: torch.Tensor | None) -> Any:
            scores = inputs["scores"]
            assert scores is not None
            return float(scores.mean())

    metric = MeanScore()
    metric.update(SCORES[:3])
    metric.update(scores=SCORES[3:10])
    assert metric.compute() == pytest.approx(float(SCORES[:10].mean()))


# ---------------------------------------------------------------- 2 gloo ranks


def _accumulated(metric: Metric, *batch: torch.Tensor) -> Any:
    metric.update(*batch)
    return metric.compute()


def _rank_results(rank: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in ALL:
        results[name] = _accumulate(name, [0, 1] if rank == 0 else [2, 3]).compute()
    # rank 1 without data: the value is rank 0's
    results["gauc/rank-1-empty"] = _accumulate("gauc", [0, 1] if rank == 0 else []).compute()
    local = M.NDCG(sync_on_compute=False)
    local.update(*_lists(_cuts()[2 * rank], 2 * rank))
    results["ndcg/local"] = local.compute()
    for key, call in {
        "error/columns": lambda: _accumulated(M.RankingLoss(), LABEL_SCORES[:4, : 4 + rank], MULTI_HOT[:4, : 4 + rank]),
        "error/empty": lambda: M.AUC().compute(),
    }.items():
        try:
            call()
            results[key] = "no error"
        except ValueError as error:
            results[key] = str(error)
    return results


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return run_on_ranks(_rank_results, 2, tmp_path_factory.mktemp("stateful_metrics"))


@pytest.mark.parametrize("name", ALL)
def test_two_ranks_equal_one_process(ranks: list[dict[str, Any]], name: str) -> None:
    expected = _expected(name)
    for results in ranks:
        _same(results[name], expected)


def test_two_ranks_edge_cases(ranks: list[dict[str, Any]]) -> None:
    first_two = slice(0, SIZES[0] + SIZES[1])
    for results in ranks:
        _same(results["gauc/rank-1-empty"], M.gauc(SCORES[first_two], CLICKS[first_two], GROUPS[first_two]))
    for rank, results in enumerate(ranks):
        _same(results["ndcg/local"], M.ndcg_at_k(*_lists(_cuts()[2 * rank], 2 * rank)))
    for key in ("error/columns", "error/empty"):
        assert ranks[0][key] == ranks[1][key], key
    assert "scores must keep its shape beyond the first axis" in ranks[0]["error/columns"]
    assert "across ranks" in ranks[0]["error/columns"]
    assert "AUC has no data" in ranks[0]["error/empty"]


def test_the_metric_base_is_abstract() -> None:
    from pairloss.metrics.stateful import Metric

    with pytest.raises(TypeError, match="abstract"):
        type("Incomplete", (Metric,), {"fields": ()})()
