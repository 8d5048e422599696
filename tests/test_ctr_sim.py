"""The simulated CTR system: logs, splits by request, reference lists of dumped scores, shuffled/grouped batches."""

from __future__ import annotations

import pytest
import torch

from pairloss.data.ctr_sim import CTRSimulator, RequestBatches, reference_lists


@pytest.fixture(scope="module")
def log():
    return CTRSimulator(n_users=50, n_items=80, seed=0).sample(40, seed=1)


def test_simulator_has_known_probabilities(log):
    sizes = torch.bincount(log.request)
    assert log.n_requests == 40 and sizes.min() >= 20 and sizes.max() <= 200
    assert torch.all((log.true_prob > 0) & (log.true_prob < 1))
    assert set(log.click.unique().tolist()) <= {0.0, 1.0}
    # request-level features are constant within a request
    rf = log.request_features
    first = torch.zeros(40, dtype=torch.long).scatter_reduce(
        0, log.request, torch.arange(len(log)), reduce="amin", include_self=False
    )
    assert torch.equal(rf, rf[first[log.request]])
    again = CTRSimulator(n_users=50, n_items=80, seed=0).sample(40, seed=1)
    assert torch.equal(again.click, log.click) and torch.equal(again.features, log.features)


def test_simulator_arguments_are_checked():
    with pytest.raises(ValueError, match="n_requests"):
        CTRSimulator(n_users=5, n_items=5).sample(0, seed=0)
    with pytest.raises(ValueError, match="min_candidates"):
        CTRSimulator(n_users=5, n_items=5).sample(3, seed=0, min_candidates=5, max_candidates=4)
    with pytest.raises(ValueError, match="noise"):
        CTRSimulator(n_users=5, n_items=5, feature_noise=-1.0)


def test_reference_lists_exclude_self_and_other_requests():
    log = CTRSimulator(n_users=20, n_items=30, seed=1).sample(5, seed=2, min_candidates=2, max_candidates=6)
    log = log.with_dumped(torch.randn(len(log)))
    refs = reference_lists(log)
    assert refs.scores.shape[0] == 5  # one row per request, not per impression
    index = torch.arange(len(log))
    ref_s, ref_y = refs.batch(index)
    assert log.dumped is not None
    for i in range(len(log)):
        same = (log.request == log.request[i]).nonzero().flatten().tolist()
        others = sorted((float(log.dumped[j]), float(log.click[j])) for j in same if j != i)
        got = sorted((float(v), float(lab)) for v, lab in zip(ref_s[i], ref_y[i], strict=True) if lab != -1)
        assert got == others  # the same float32 values, copied
    # a batch is the same rows, in the batch's order
    part = torch.tensor([7, 0, 3])
    for got, full in zip(refs.batch(part), (ref_s[part], ref_y[part]), strict=True):
        assert torch.equal(got, full)


def test_dumped_scores_are_checked(log):
    with pytest.raises(ValueError, match="no dumped scores"):
        reference_lists(log)
    with pytest.raises(ValueError, match="shape"):
        log.with_dumped(torch.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        log.with_dumped(torch.full((len(log),), float("nan")))


def test_split_by_request_partitions_and_renumbers(log):
    dumped = log.with_dumped(torch.arange(len(log), dtype=torch.float32))
    fit, validation = dumped.split_requests(0.25, seed=3)
    assert validation.n_requests == 10 and fit.n_requests == 30
    assert len(fit) + len(validation) == len(log)
    assert fit.dumped is not None and validation.dumped is not None
    ids = torch.cat([fit.dumped, validation.dumped]).long().sort().values
    assert torch.equal(ids, torch.arange(len(log)))  # every impression exactly once
    for part in (fit, validation):
        assert torch.equal(part.request.unique(), torch.arange(part.n_requests))
        # a request stays whole: its original id maps to one new id
        original = log.request[part.dumped.long()]
        assert all(len(original[part.request == r].unique()) == 1 for r in range(part.n_requests))
    with pytest.raises(ValueError, match="fraction"):
        log.split_requests(1.0, seed=0)
    with pytest.raises(ValueError, match="request ids"):
        log.select_requests(torch.tensor([40]))


@pytest.mark.parametrize("grouped", [False, True])
def test_request_batches_cover_each_epoch_once(log, grouped):
    batches = RequestBatches(log.request, 256, grouped=grouped, seed=0)
    assert batches.batches_per_epoch == -(-len(log) // 256)
    for epoch in range(2):
        steps = range(epoch * batches.batches_per_epoch, (epoch + 1) * batches.batches_per_epoch)
        drawn = [batches(step) for step in steps]
        assert torch.equal(torch.cat(drawn).sort().values, torch.arange(len(log)))
        if grouped:  # whole requests in a batch, batches near the target size
            for index in drawn:
                for r in log.request[index].unique():
                    assert int((log.request[index] == r).sum()) == int((log.request == r).sum())
            sizes = torch.tensor([len(i) for i in drawn[:-1]])
            assert int((sizes - 256).abs().max()) <= 200
    # the batch of a step depends on the step only (a resumed run draws the same batches)
    fresh = RequestBatches(log.request, 256, grouped=grouped, seed=0)
    assert torch.equal(fresh(batches.batches_per_epoch + 1), batches(batches.batches_per_epoch + 1))
    assert not torch.equal(RequestBatches(log.request, 256, grouped=grouped, seed=1)(0), fresh(0))


def test_request_batches_arguments_are_checked(log):
    with pytest.raises(ValueError, match="batch_size"):
        RequestBatches(log.request, 0, grouped=False, seed=0)
    with pytest.raises(ValueError, match="request"):
        RequestBatches(torch.zeros(0, dtype=torch.long), 8, grouped=True, seed=0)


def test_grouped_batches_with_small_requests_keep_the_number_of_updates():
    log = CTRSimulator(n_users=30, n_items=40, seed=0).sample(12, seed=1, min_candidates=3, max_candidates=9)
    batches = RequestBatches(log.request, 16, grouped=True, seed=0)
    drawn = [batches(step) for step in range(batches.batches_per_epoch)]
    assert all(len(index) > 0 for index in drawn)
    assert torch.equal(torch.cat(drawn).sort().values, torch.arange(len(log)))
    with pytest.raises(ValueError, match="at least one request per batch"):
        RequestBatches(log.request[:20], 2, grouped=True, seed=0)
