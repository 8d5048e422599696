"""Ranking metrics against scikit-learn, LightGBM and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score, roc_auc_score

from pairloss.metrics import auc, gauc, mean_average_precision, mrr, ndcg_at_k


def _flat(seed=0, n_groups=12):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 9, n_groups)
    groups = np.repeat(np.arange(n_groups) * 7 + 3, sizes)
    rng.shuffle(groups)
    rel = rng.integers(0, 4, groups.size)
    rel[groups == groups[0]] = 0  # one group without any relevant item (IDCG = 0)
    scores = rng.normal(size=groups.size)
    return scores, rel, groups


def _per_group(scores, rel, groups):
    for g in np.unique(groups):
        m = groups == g
        yield scores[m], rel[m]


@pytest.mark.parametrize("k", [None, 1, 3, 5])
def test_ndcg_equals_sklearn_with_zero_convention(k):
    scores, rel, groups = _flat()
    expected = np.mean(
        [ndcg_score([2.0**y - 1], [s], k=k) for s, y in _per_group(scores, rel, groups)]
    )  # sklearn's linear gain on 2^y − 1 is the exponential gain
    assert ndcg_at_k(scores, rel, groups, k=k, empty="zero") == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("k", [1, 3, 5, 10])
def test_ndcg_equals_lightgbm_with_one_convention(k):
    lgb = pytest.importorskip("lightgbm")
    scores, rel, groups = _flat(seed=1)
    order = np.argsort(groups, kind="stable")
    scores, rel, groups = scores[order], rel[order], groups[order]
    _, sizes = np.unique(groups, return_counts=True)
    data = lgb.Dataset(np.zeros((groups.size, 1)), label=rel, group=sizes, init_score=scores)
    record: dict = {}
    params = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [k],
        "verbose": -1,
        "min_data_in_leaf": 10**6,  # no split: every tree adds a constant, which keeps each query's order
        "num_threads": 1,
    }
    lgb.train(params, data, num_boost_round=1, valid_sets=[data], callbacks=[lgb.record_evaluation(record)])
    lgb_value = record["training"][f"ndcg@{k}"][-1]
    assert ndcg_at_k(scores, rel, groups, k=k, empty="one") == pytest.approx(lgb_value, abs=1e-6)


def test_ndcg_by_hand_and_padded_form():
    # list 1: scores rank items as [rel 0, rel 2, rel 1]; list 2: no relevant item
    s = np.array([[0.9, 0.5, 0.1, 0.0], [0.3, 0.2, 0.0, 0.0]])
    y = np.array([[0, 2, 1, -1], [0, 0, -1, -1]])
    dcg = 0 / math.log2(2) + 3 / math.log2(3) + 1 / math.log2(4)
    idcg = 3 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(s, y, empty="skip") == pytest.approx(dcg / idcg)
    assert ndcg_at_k(s, y, empty="one") == pytest.approx((dcg / idcg + 1) / 2)
    assert ndcg_at_k(torch.tensor(s), torch.tensor(y), empty="zero") == pytest.approx(dcg / idcg / 2)
    assert ndcg_at_k(s, y, k=1, empty="skip") == 0.0
    assert mrr(s, y) == pytest.approx(0.5)
    assert mrr(s, y, empty="zero") == pytest.approx(0.25)
    assert mean_average_precision(s, y) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_map_and_mrr_against_loops():
    scores, rel, groups = _flat(seed=2)
    aps, rrs = [], []
    for s, y in _per_group(scores, rel, groups):
        ranked = y[np.argsort(-s, kind="stable")] > 0
        if not ranked.any():
            continue
        hits = np.flatnonzero(ranked) + 1
        aps.append(np.mean([(i + 1) / r for i, r in enumerate(hits)]))
        rrs.append(1 / hits[0])
    assert mean_average_precision(scores, rel, groups) == pytest.approx(np.mean(aps))
    assert mrr(scores, rel, groups) == pytest.approx(np.mean(rrs))


def test_auc_and_gauc():
    scores = np.array([0.9, 0.1, 0.4, 0.4, 0.8, 0.3, 0.2, 0.5, 0.5])
    labels = np.array([1, 0, 1, 0, 0, 1, 0, 1, 0])
    groups = np.array([1, 1, 2, 2, 2, 3, 3, 4, 4])
    assert auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    # by hand: g1 AUC 1 (n=2); g2: pos 0.4 vs negs 0.4 (tie ½), 0.8 (0) → 0.25 (n=3); g3: 1 (n=2);
    # g4: tie → 0.5 (n=2)
    expected = (2 * 1.0 + 3 * 0.25 + 2 * 1.0 + 2 * 0.5) / 9
    assert gauc(scores, labels, groups) == pytest.approx(expected)
    # a group whose labels are all equal is skipped
    scores2 = np.r_[scores, 0.7, 0.1]
    assert gauc(scores2, np.r_[labels, 1, 1], np.r_[groups, 8, 8]) == pytest.approx(expected)


def test_gauc_against_sklearn_per_group():
    rng = np.random.default_rng(4)
    groups = rng.integers(0, 30, 600)
    labels = rng.integers(0, 2, 600)
    scores = np.round(rng.normal(size=600), 1)  # many ties
    num = den = 0.0
    for g in np.unique(groups):
        m = groups == g
        if labels[m].min() != labels[m].max():
            num += m.sum() * roc_auc_score(labels[m], scores[m])
            den += m.sum()
    assert gauc(scores, labels, groups) == pytest.approx(num / den, rel=1e-12)


def test_metric_errors():
    with pytest.raises(ValueError, match="binary"):
        auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="both positive and negative"):
        auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="at least one group"):
        gauc([0.1, 0.2], [1, 1], [0, 1])
    with pytest.raises(ValueError, match="empty must be"):
        ndcg_at_k([[0.1, 0.2]], [[1, 0]], empty="nan")
    with pytest.raises(ValueError, match="k must be"):
        ndcg_at_k([[0.1, 0.2]], [[1, 0]], k=0)
    with pytest.raises(ValueError, match="finite"):
        ndcg_at_k([[0.1, np.nan]], [[1, 0]])
    with pytest.raises(ValueError, match="or -1"):
        ndcg_at_k([[0.1, 0.3]], [[1, -3]])
    with pytest.raises(ValueError, match="same shape"):
        mrr([[0.1, 0.3]], [[1, 0, 1]])
