"""Bad inputs to every public metric: a ``ValueError`` naming the argument, never a bare library error, a silent NaN
or a number computed from garbage.

Each metric of ``pairloss.metrics`` is described once by the role of each argument (scores, labels, cut-off, ...);
every role has a list of bad values, and every (metric, argument, bad value) triple is a test case. A metric added
to ``pairloss.metrics.__all__`` without a description here fails ``test_every_public_metric_is_swept``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

from pairloss import metrics

NAN, INF = math.nan, math.inf


@dataclass(frozen=True)
class Swept:
    """A metric with valid arguments and, for each argument that is swept, its role."""

    call: Callable[..., Any]
    args: dict[str, Any]
    roles: dict[str, str]
    wrap: Callable[[Any], Any] = field(default=lambda value: value)


def _embeddings() -> torch.Tensor:
    return torch.randn(12, 4, generator=torch.Generator().manual_seed(0))


CLASS_IDS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
LISTS = np.array([[2.0, 0.5, 1.0, 0.1], [0.3, 1.2, -0.4, 0.0]])
RELEVANCE = np.array([[2.0, 0.0, 1.0, 0.0], [1.0, 0.0, 3.0, -1.0]])
PROBS = np.array([0.1, 0.8, 0.4, 0.9, 0.3, 0.6])
CLICKS = np.array([0, 1, 0, 1, 1, 0])
GROUPS = np.array([0, 0, 0, 1, 1, 1])
TOP_SCORES = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.4, 0.6]])
TOP_RELEVANT = torch.tensor([[True, False, True, False], [False, False, True, True]])
LABEL_SCORES = np.array([[0.9, -0.2, 0.4], [0.1, 0.7, -0.5], [0.3, 0.2, 0.8]])
MULTI_HOT = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
CODES = np.array([[0.5, -1.0, 0.2, -0.1], [-0.4, 0.9, 0.3, 0.8], [0.1, 0.2, -0.7, 0.4]])
CODE_LABELS = np.array([0, 1, 0])


def _ranking() -> metrics.HammingRanking:
    return metrics.hamming_ranking(CODES, CODE_LABELS, CODES, CODE_LABELS)


def _curves() -> dict[str, metrics.ReliabilityCurve]:
    return {"model": metrics.reliability_curve(PROBS, CLICKS)}


SWEPT: dict[str, Swept] = {
    "retrieval": Swept(
        metrics.retrieval,
        {"query": _embeddings(), "query_labels": CLASS_IDS, "k": 1},
        {"query": "embeddings", "query_labels": "class_ids", "k": "ks"},
    ),
    "retrieval_per_query": Swept(
        metrics.retrieval_per_query,
        {"query": _embeddings(), "query_labels": CLASS_IDS, "k": (1, 2)},
        {"query": "embeddings", "query_labels": "class_ids", "k": "ks"},
    ),
    "ndcg_at_k": Swept(
        metrics.ndcg_at_k,
        {"scores": LISTS, "relevance": RELEVANCE, "k": 2},
        {"scores": "lists", "relevance": "relevance", "k": "cutoff"},
    ),
    "mrr": Swept(metrics.mrr, {"scores": LISTS, "relevance": RELEVANCE}, {"scores": "lists", "relevance": "relevance"}),
    "mean_average_precision": Swept(
        metrics.mean_average_precision,
        {"scores": LISTS, "relevance": RELEVANCE},
        {"scores": "lists", "relevance": "relevance"},
    ),
    "auc": Swept(metrics.auc, {"scores": PROBS, "labels": CLICKS}, {"scores": "flat_scores", "labels": "binary"}),
    "gauc": Swept(
        metrics.gauc,
        {"scores": PROBS, "labels": CLICKS, "group_ids": GROUPS},
        {"scores": "flat_scores", "labels": "binary", "group_ids": "groups"},
    ),
    "top_n_hits": Swept(
        metrics.top_n_hits,
        {"scores": TOP_SCORES, "relevant": TOP_RELEVANT, "n": 2},
        {"scores": "lists", "relevant": "mask", "n": "cutoff", "valid": "mask"},
    ),
    "precision_at_n": Swept(
        metrics.precision_at_n,
        {"scores": TOP_SCORES, "relevant": TOP_RELEVANT, "n": 2},
        {"scores": "lists", "relevant": "mask", "n": "cutoff", "valid": "mask"},
    ),
    "recall_at_n": Swept(
        metrics.recall_at_n,
        {"scores": TOP_SCORES, "relevant": TOP_RELEVANT, "n": 2},
        {"scores": "lists", "relevant": "mask", "n": "cutoff", "valid": "mask"},
    ),
    "kendall_tau": Swept(
        metrics.kendall_tau,
        {"scores": TOP_SCORES, "target": TOP_SCORES.flip(1)},
        {"scores": "lists", "target": "lists", "valid": "mask"},
    ),
    "log_loss": Swept(
        metrics.log_loss, {"probs": PROBS, "labels": CLICKS}, {"probs": "probs", "labels": "binary", "eps": "eps"}
    ),
    "pcoc": Swept(metrics.pcoc, {"probs": PROBS, "labels": CLICKS}, {"probs": "probs", "labels": "binary"}),
    "ece": Swept(
        metrics.ece, {"probs": PROBS, "labels": CLICKS}, {"probs": "probs", "labels": "binary", "n_bins": "cutoff"}
    ),
    "reliability_curve": Swept(
        metrics.reliability_curve,
        {"probs": PROBS, "labels": CLICKS},
        {"probs": "probs", "labels": "binary", "n_bins": "cutoff"},
    ),
    "reliability_diagram": Swept(metrics.reliability_diagram, {"curves": _curves()}, {}),
    "ranking_loss": Swept(
        metrics.ranking_loss,
        {"scores": LABEL_SCORES, "labels": MULTI_HOT},
        {"scores": "label_scores", "labels": "multi_hot"},
    ),
    "coverage": Swept(
        metrics.coverage,
        {"scores": LABEL_SCORES, "labels": MULTI_HOT},
        {"scores": "label_scores", "labels": "multi_hot"},
    ),
    "one_error": Swept(
        metrics.one_error,
        {"scores": LABEL_SCORES, "labels": MULTI_HOT},
        {"scores": "label_scores", "labels": "multi_hot"},
    ),
    "label_ranking_average_precision": Swept(
        metrics.label_ranking_average_precision,
        {"scores": LABEL_SCORES, "labels": MULTI_HOT},
        {"scores": "label_scores", "labels": "multi_hot"},
    ),
    "multilabel_report": Swept(
        metrics.multilabel_report,
        {"scores": LABEL_SCORES, "labels": MULTI_HOT},
        {"scores": "label_scores", "labels": "multi_hot", "threshold": "finite"},
    ),
    "hamming_loss": Swept(
        metrics.hamming_loss,
        {"predictions": MULTI_HOT, "labels": MULTI_HOT},
        {"predictions": "multi_hot", "labels": "multi_hot"},
    ),
    "micro_f1": Swept(
        metrics.micro_f1,
        {"predictions": MULTI_HOT, "labels": MULTI_HOT},
        {"predictions": "multi_hot", "labels": "multi_hot"},
    ),
    "macro_f1": Swept(
        metrics.macro_f1,
        {"predictions": MULTI_HOT, "labels": MULTI_HOT},
        {"predictions": "multi_hot", "labels": "multi_hot"},
    ),
    "pack_codes": Swept(metrics.pack_codes, {"codes": CODES}, {"codes": "codes"}),
    "hamming_ranking": Swept(
        metrics.hamming_ranking,
        {"query_codes": CODES, "query_labels": CODE_LABELS, "db_codes": CODES, "db_labels": CODE_LABELS},
        {"query_codes": "codes", "query_labels": "code_labels", "db_codes": "codes", "db_labels": "code_labels"},
    ),
    "hamming_map": Swept(metrics.hamming_map, {"ranking": _ranking()}, {"top_k": "cutoff"}),
    "precision_within_radius": Swept(metrics.precision_within_radius, {"ranking": _ranking()}, {"radius": "radius"}),
    "precision_recall_curve": Swept(metrics.precision_recall_curve, {"ranking": _ranking()}, {}),
}

#: Bad values of each role, with a short id and what the message must say (besides the argument's name).
BAD: dict[str, list[tuple[str, Any, str]]] = {
    "embeddings": [
        ("nan", _embeddings().masked_fill(_embeddings() > 1, NAN), "NaN"),
        ("inf", _embeddings().masked_fill(_embeddings() > 1, INF), "infinite"),
        ("1-D", _embeddings()[:, 0], "dimensions"),
        ("integer", _embeddings().long(), "floating"),
        ("empty", _embeddings()[:0], "empty"),
        ("numpy", _embeddings().numpy(), "torch.Tensor"),
    ],
    "class_ids": [
        ("float", CLASS_IDS.float(), "integer"),
        ("short", CLASS_IDS[:5], "entries"),
        ("2-D", CLASS_IDS[:, None].repeat(1, 2), "class ids"),
    ],
    "ks": [("zero", 0, "positive"), ("float", 1.0, "positive"), ("empty", [], "positive"), ("str", "1", "positive")],
    "cutoff": [("zero", 0, ">= 1"), ("float", 1.5, "int"), ("bool", True, "int")],
    "radius": [("negative", -1, ">= 0"), ("float", 1.5, "int")],
    "eps": [("zero", 0.0, "eps"), ("half", 0.5, "eps"), ("nan", NAN, "eps")],
    "finite": [("nan", NAN, "finite"), ("inf", INF, "finite")],
    "lists": [
        ("nan", np.array([[NAN, 1.0, 0.5, 0.2], [0.1, 0.2, 0.3, 0.4]]), "NaN|finite"),
        ("inf", np.array([[INF, 1.0, 0.5, 0.2], [0.1, 0.2, 0.3, 0.4]]), "infinite|finite"),
        ("1-D", np.array([0.1, 0.2, 0.3, 0.4]), "shape"),
        ("3-D", np.zeros((1, 2, 4)), "shape"),
        ("no lists", np.zeros((0, 4)), "empty|shape"),
        ("no items", np.zeros((2, 0)), "empty|shape"),
        ("text", np.array([["a", "b", "c", "d"], ["e", "f", "g", "h"]]), "number|real|shape"),
    ],
    "relevance": [
        ("nan", np.array([[NAN, 0.0, 1.0, 0.0], [1.0, 0.0, 3.0, -1.0]]), "finite"),
        ("below -1", np.array([[-2.0, 0.0, 1.0, 0.0], [1.0, 0.0, 3.0, -1.0]]), ">= 0"),
        ("short", RELEVANCE[:, :3], "shape"),
    ],
    "mask": [
        ("twos", torch.full((2, 4), 2), "0/1"),
        ("short", TOP_RELEVANT[:, :3], "shape"),
        ("1-D", TOP_RELEVANT[0], "shape"),
    ],
    "flat_scores": [("nan", np.r_[NAN, PROBS[1:]], "finite"), ("short", PROBS[:3], "length")],
    "binary": [
        ("twos", CLICKS * 2, "0/1"),
        ("nan", np.r_[NAN, CLICKS[1:]], "0/1"),
        ("empty", np.zeros(0), "empty|length"),
    ],
    "groups": [("short", GROUPS[:3], "length")],
    "probs": [
        ("nan", np.r_[NAN, PROBS[1:]], "finite"),
        ("above one", PROBS + 1, r"\[0, 1\]"),
        ("negative", PROBS - 1, r"\[0, 1\]"),
        ("empty", np.zeros(0), "empty|length"),
        ("text", np.array(["a"] * 6), "number"),
    ],
    "label_scores": [
        ("nan", np.where(LABEL_SCORES > 0.5, NAN, LABEL_SCORES), "NaN"),
        ("1-D", LABEL_SCORES[0], "2-D"),
        ("no rows", LABEL_SCORES[:0], "empty"),
        ("no labels", LABEL_SCORES[:, :0], "empty|shape"),
        ("short", LABEL_SCORES[:, :2], "shape"),
    ],
    "multi_hot": [("twos", MULTI_HOT * 2, "0 and 1"), ("1-D", MULTI_HOT[0], "2-D"), ("empty", MULTI_HOT[:0], "empty")],
    "codes": [
        ("nan", np.where(CODES > 0.5, NAN, CODES), "NaN"),
        ("1-D", CODES[0], "2-D"),
        ("no bits", CODES[:, :0], "K >= 1"),
        ("no codes", CODES[:0], "empty"),
    ],
    "code_labels": [
        ("short", CODE_LABELS[:2], "label"),
        ("nan", np.array([0.0, NAN, 1.0]), "integer"),
        ("fractional", np.array([0.0, 0.5, 1.0]), "integer"),
    ],
}

CASES = [
    pytest.param(metric, argument, value, message, id=f"{metric}-{argument}-{label}")
    for metric, swept in SWEPT.items()
    for argument, role in swept.roles.items()
    for label, value, message in BAD[role]
]


@pytest.mark.parametrize(("metric", "argument", "value", "message"), CASES)
def test_bad_argument_is_named(metric: str, argument: str, value: Any, message: str) -> None:
    swept = SWEPT[metric]
    args = {**swept.args, argument: value}
    with pytest.raises(ValueError, match=message) as raised:
        swept.call(**args)
    said = str(raised.value)
    assert argument in said, f"{metric}: the message for a bad {argument!r} does not name it: {said!r}"


@pytest.mark.parametrize("metric", SWEPT)
def test_the_valid_arguments_give_a_finite_value(metric: str) -> None:
    swept = SWEPT[metric]
    result = swept.call(**swept.args)
    values = result.values() if isinstance(result, dict) else [result] if isinstance(result, float) else []
    assert all(bool(np.isfinite(np.asarray(v)).all()) for v in values), result


def test_every_public_metric_is_swept() -> None:
    public = {name for name in metrics.__all__ if callable(getattr(metrics, name)) and name[0].islower()}
    assert public <= set(SWEPT), f"add these metrics to the bad-input sweep: {sorted(public - set(SWEPT))}"


# ------------------------------------------------------------------------------- undefined values warn


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda: metrics.retrieval(_embeddings(), torch.arange(12), k=1), "no query has a reference"),
        (lambda: metrics.mrr(LISTS, np.zeros_like(RELEVANCE)), "no list has a relevant item"),
        (lambda: metrics.mean_average_precision(LISTS, np.zeros_like(RELEVANCE)), "no list has a relevant item"),
        (lambda: metrics.recall_at_n(TOP_SCORES, torch.zeros(2, 4, dtype=torch.bool), 2), "no list has a relevant"),
        (lambda: metrics.kendall_tau(torch.ones(2, 4), TOP_SCORES), "no list"),
        (lambda: metrics.pcoc(PROBS, np.zeros(6)), "no click"),
        (lambda: metrics.coverage(LABEL_SCORES, np.zeros((3, 3))), "no row has a relevant label"),
        (lambda: metrics.one_error(LABEL_SCORES, np.zeros((3, 3))), "no row has a relevant label"),
        (lambda: metrics.label_ranking_average_precision(LABEL_SCORES, np.zeros((3, 3))), "no row has a relevant"),
        (lambda: metrics.ranking_loss(LABEL_SCORES, np.ones((3, 3)), convention="paper"), "no row has both"),
    ],
)
def test_an_undefined_metric_warns_with_its_reason(call: Callable[[], Any], reason: str) -> None:
    with pytest.warns(RuntimeWarning, match=reason):
        result = call()
    values = result.values() if isinstance(result, dict) else [result]
    assert all(math.isnan(v) for v in values)


# ---------------------------------------------------------------------------------- no silent wrong number


def test_ndcg_of_a_large_relevance_is_the_exact_ratio() -> None:
    # 2^1100 overflows float64: the gains are scaled per list, which leaves the ratio DCG / IDCG unchanged
    relevance = np.array([[1100.0, 1099.0, 0.0]])
    scores = np.array([[0.0, 1.0, 2.0]])  # ranked 0, 1099, 1100
    disc = 1 / np.log2(np.arange(2, 5))
    dcg = (2.0 ** (-1100) * 0 + 2.0 ** (-1) * disc[1] + 1.0 * disc[2]) / 1.0
    idcg = 1.0 * disc[0] + 2.0 ** (-1) * disc[1]
    assert metrics.ndcg_at_k(scores, relevance) == pytest.approx(dcg / idcg, rel=1e-12)


def test_precision_at_n_rejects_nan_scores_instead_of_ranking_them() -> None:
    scores = torch.tensor([[NAN, 1.0, 2.0]])
    with pytest.raises(ValueError, match="scores contains 1 NaN"):
        metrics.precision_at_n(scores, torch.tensor([[True, False, False]]), 1)


def test_padded_slots_may_hold_minus_infinity() -> None:
    scores = TOP_SCORES.clone()
    scores[1, 3] = -INF
    valid = torch.ones(2, 4, dtype=torch.bool)
    valid[1, 3] = False
    assert metrics.precision_at_n(scores, TOP_RELEVANT, 2, valid) == 0.75
    with pytest.raises(ValueError, match="scores contains 1 NaN or infinite value"):
        metrics.precision_at_n(scores, TOP_RELEVANT, 2)


def test_retrieval_accepts_numpy_integer_cutoffs() -> None:
    got = metrics.retrieval(_embeddings(), CLASS_IDS, k=[np.int64(1), 2])
    assert set(got) >= {"recall@1", "recall@2"}
