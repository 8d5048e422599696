"""AWTR, BPR and WARP against loop references written from their formulas, gradients and edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from pairloss import functional
from pairloss.losses import AWTRLoss, BPRLoss, WARPLoss, registered_losses
from pairloss.losses.ranking import ranknet_loss
from pairloss.losses.topn import awtr_loss, bpr_loss, top_n_membership, warp_loss


def _lists(b: int = 3, length: int = 7, levels: int = 4, pad: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, length, generator=g, dtype=torch.float64)
    relevance = torch.randint(0, levels, (b, length), generator=g).double()
    relevance[0, length - pad :] = -1  # padding in the first list
    return scores, relevance


def _real(row: torch.Tensor) -> list[int]:
    return [i for i in range(row.numel()) if row[i] >= 0]


def awtr_reference(scores, relevance, top_n, alpha, sigma=1.0) -> float:
    num = den = 0.0
    for s, y in zip(scores.tolist(), relevance.tolist()):
        real = [i for i in range(len(s)) if y[i] >= 0]
        by_score = sorted(real, key=lambda i: -s[i])[:top_n]
        rel_sorted = sorted((y[i] for i in real), reverse=True)
        kth = rel_sorted[min(top_n, len(real)) - 1] if real else math.inf
        member = {i for i in real if i in by_score or y[i] >= kth}
        for i in real:
            for j in real:
                if y[i] > y[j]:
                    w = 1.0 if (i in member or j in member) else alpha
                    num += w * math.log1p(math.exp(-sigma * (s[i] - s[j])))
                    den += w
    return num / den if den else 0.0


def bpr_reference(scores, relevance, threshold) -> float:
    total, count = 0.0, 0
    for s, y in zip(scores.tolist(), relevance.tolist()):
        for i in range(len(s)):
            for j in range(len(s)):
                if y[i] > threshold and 0 <= y[j] <= threshold:
                    total += -math.log(1 / (1 + math.exp(-(s[i] - s[j]))))
                    count += 1
    return total / count if count else 0.0


def warp_reference(scores, relevance, threshold, margin) -> float:
    total, anchors = 0.0, 0
    for s, y in zip(scores.tolist(), relevance.tolist()):
        negatives = [j for j in range(len(s)) if 0 <= y[j] <= threshold]
        for i in range(len(s)):
            if y[i] <= threshold or not negatives:
                continue
            anchors += 1
            violators = [j for j in negatives if margin - s[i] + s[j] > 0]
            r = len(violators)
            if r:
                phi = sum(1 / k for k in range(1, r + 1))
                total += phi / r * sum(margin - s[i] + s[j] for j in violators)
    return total / anchors if anchors else 0.0


@pytest.mark.parametrize("top_n,alpha", [(1, 0.1), (3, 0.0), (3, 0.5), (10, 0.2)])
def test_awtr_matches_reference(top_n: int, alpha: float) -> None:
    scores, relevance = _lists()
    value = awtr_loss(scores, relevance, top_n=top_n, alpha=alpha)
    assert value.item() == pytest.approx(awtr_reference(scores, relevance, top_n, alpha), rel=1e-10)


def test_awtr_sigma_matches_reference() -> None:
    scores, relevance = _lists(seed=3)
    value = awtr_loss(scores, relevance, top_n=2, alpha=0.3, sigma=2.5)
    assert value.item() == pytest.approx(awtr_reference(scores, relevance, 2, 0.3, 2.5), rel=1e-10)


def test_awtr_with_alpha_one_is_ranknet() -> None:
    scores, relevance = _lists(seed=1)
    assert awtr_loss(scores, relevance, top_n=2, alpha=1.0).item() == pytest.approx(
        ranknet_loss(scores, relevance).item(), rel=1e-12
    )


def test_awtr_weights_adapt_to_current_scores() -> None:
    relevance = torch.tensor([[3.0, 2.0, 1.0, 0.0, 0.0]])
    valid = relevance >= 0
    low = torch.tensor([[0.0, 0.1, 0.2, 5.0, 4.0]])
    member = top_n_membership(low, relevance, valid, 1)
    assert member.tolist() == [[True, False, False, True, False]]  # true top-1 and the predicted top-1
    fixed = torch.tensor([[5.0, 0.1, 0.2, 0.0, 4.0]])
    assert top_n_membership(fixed, relevance, valid, 1).tolist() == [[True, False, False, False, False]]


def test_awtr_emphasises_top_pairs() -> None:
    scores = torch.zeros(1, 6, dtype=torch.float64, requires_grad=True)
    relevance = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    awtr_loss(scores, relevance, top_n=1, alpha=0.1).backward()
    grad = scores.grad[0]
    # The true top item (in every one of its pairs at full weight) is pushed up harder than the middle items.
    assert -grad[0] > -grad[1] > 0


@pytest.mark.parametrize("threshold", [0.0, 1.0, 2.5])
def test_bpr_matches_reference(threshold: float) -> None:
    scores, relevance = _lists(seed=2)
    assert bpr_loss(scores, relevance, threshold=threshold).item() == pytest.approx(
        bpr_reference(scores, relevance, threshold), rel=1e-10
    )


@pytest.mark.parametrize("threshold,margin", [(0.0, 1.0), (1.0, 0.5), (2.0, 2.0)])
def test_warp_matches_reference(threshold: float, margin: float) -> None:
    scores, relevance = _lists(seed=4, length=9)
    assert warp_loss(scores, relevance, threshold=threshold, margin=margin).item() == pytest.approx(
        warp_reference(scores, relevance, threshold, margin), rel=1e-10
    )


@pytest.mark.parametrize(
    "fn",
    [
        lambda s, y: awtr_loss(s, y, top_n=2, alpha=0.2),
        lambda s, y: bpr_loss(s, y, threshold=1.0),
        lambda s, y: warp_loss(s, y, threshold=1.0, margin=0.7),
    ],
)
def test_gradcheck(fn) -> None:
    scores, relevance = _lists(b=2, length=5, seed=5)
    scores.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: fn(s, relevance), (scores,))


@pytest.mark.parametrize("fn", [awtr_loss, bpr_loss, warp_loss])
@pytest.mark.parametrize(
    "relevance",
    [
        torch.tensor([[2.0, 2.0, 2.0, -1.0]]),  # one relevance level: no pair
        torch.tensor([[1.0, -1.0, -1.0, -1.0]]),  # a single real item
        torch.tensor([[0.0, 0.0, 0.0, 0.0]]),  # no positive item at all
    ],
)
def test_no_pair_gives_zero_and_zero_gradient(fn, relevance: torch.Tensor) -> None:
    scores = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)
    loss = fn(scores, relevance)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(scores.grad, torch.zeros_like(scores))


@pytest.mark.parametrize("fn", [awtr_loss, bpr_loss, warp_loss])
def test_padding_gets_no_gradient_and_does_not_change_the_loss(fn) -> None:
    scores, relevance = _lists(seed=6)
    scores.requires_grad_(True)
    loss = fn(scores, relevance)
    loss.backward()
    assert torch.equal(scores.grad[0, -2:], torch.zeros(2, dtype=torch.float64))
    changed = scores.detach().clone()
    changed[0, -2:] = 1e3
    assert fn(changed, relevance).item() == pytest.approx(loss.item(), rel=1e-12)


@pytest.mark.parametrize("fn", [awtr_loss, bpr_loss, warp_loss])
def test_invalid_inputs_raise(fn) -> None:
    scores, relevance = _lists()
    bad = scores.clone()
    bad[1, 0] = math.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        fn(bad, relevance)
    bad[1, 0] = math.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        fn(bad, relevance)
    with pytest.raises(ValueError, match="relevance must have the shape"):
        fn(scores, relevance[:, :3])
    with pytest.raises(ValueError, match="dimensions"):
        fn(scores[0], relevance[0])
    with pytest.raises(ValueError, match="floating-point"):
        fn(scores.long(), relevance)
    with pytest.raises(ValueError, match="relevance must be >= 0"):
        fn(scores, relevance - 3)


def test_hyper_parameters_are_checked() -> None:
    scores, relevance = _lists()
    with pytest.raises(ValueError, match="top_n"):
        awtr_loss(scores, relevance, top_n=0)
    with pytest.raises(ValueError, match="alpha"):
        awtr_loss(scores, relevance, alpha=1.5)
    with pytest.raises(ValueError, match="sigma"):
        awtr_loss(scores, relevance, sigma=0.0)
    with pytest.raises(ValueError, match="margin"):
        warp_loss(scores, relevance, margin=-1.0)


def test_modules_match_functional_and_are_registered() -> None:
    scores, relevance = _lists(seed=7)
    assert (
        AWTRLoss(top_n=2, alpha=0.3)(scores, relevance).item()
        == functional.awtr_loss(scores, relevance, top_n=2, alpha=0.3).item()
    )
    assert BPRLoss(threshold=1.0)(scores, relevance).item() == bpr_loss(scores, relevance, threshold=1.0).item()
    assert WARPLoss(margin=0.5)(scores, relevance).item() == warp_loss(scores, relevance, margin=0.5).item()
    registry = registered_losses()
    for name in ("AWTRLoss", "BPRLoss", "WARPLoss"):
        assert registry[name].family == "topn"
        assert registry[name].formula and registry[name].paper


def test_float32_follows_input_dtype() -> None:
    scores, relevance = _lists()
    assert awtr_loss(scores.float(), relevance).dtype == torch.float32
    assert warp_loss(scores.float(), relevance).dtype == torch.float32
