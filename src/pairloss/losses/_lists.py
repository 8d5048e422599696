"""Lists of scored items for the ranking losses: validation, padding, flat→padded conversion, chunking, DCG.

A batch of ranking lists is ``(scores [B, L], relevance [B, L])`` where a relevance of ``-1`` marks a padded slot
(the allRank / TF-Ranking convention). A flat batch ``(scores [n], relevance [n], group_ids [n])`` (one row per
impression, as in a CTR log) is converted to that padded form by :func:`group_to_lists` with one sort and no
Python loop over groups.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.utils.checkpoint import checkpoint

from pairloss._validation import check_floating, check_positive, check_tensor
from pairloss.losses.base import BatchAxis

__all__ = [
    "LIST_BATCH_AXES",
    "PAD",
    "Lists",
    "chunked_list_sums",
    "dcg_discounts",
    "exp_gains",
    "group_to_lists",
    "ideal_dcg",
    "pairwise_sum",
    "prepare_lists",
]

#: ``(scores of a chunk [b, L], the chunk's slice of lists) -> (pairs [b, L, L] bool, weights [b, L, L] or 1.0)``.
PairSelector = Callable[[Tensor, slice], tuple[Tensor, Tensor | float]]
#: ``(d = s_i − s_j, derivative) -> φ(d)``, or ``φ'(d)`` when ``derivative`` is true.
PairLink = Callable[[Tensor, bool], Tensor]

#: Relevance value of a padded slot.
PAD = -1.0

#: How padded lists ``(scores [B, L], relevance [B, L])`` split over ranks are joined: lists along axis 0, the
#: shorter ones padded to the longest with the padding convention (score 0, relevance ``-1``).
LIST_BATCH_AXES = {"scores": BatchAxis(pad=0.0), "relevance": BatchAxis(pad=PAD)}

#: Bytes that the ``[b, L, L]`` pair temporaries of one chunk of lists may take.
DEFAULT_LIST_MEMORY = 256 * 2**20


@dataclass(frozen=True)
class Lists:
    """Validated padded lists.

    Attributes:
        scores: ``[B, L]`` scores; padded slots hold 0 (so they never produce NaN and get zero gradient).
        relevance: ``[B, L]`` relevance in the scores' dtype, ``-1`` at padded slots.
        valid: ``[B, L]`` bool, the real items.
        informative: ``[B]`` bool, lists with at least two real items of different relevance; the others carry no
            ordering information and contribute 0 to every ranking loss (and are not counted in its mean).
    """

    scores: Tensor
    relevance: Tensor
    valid: Tensor
    informative: Tensor


def group_to_lists(
    scores: Tensor, relevance: Tensor, group_ids: Tensor, pad_value: float = PAD
) -> tuple[Tensor, Tensor, Tensor]:
    """Convert flat ``(scores [n], relevance [n], group_ids [n])`` to padded ``[B, L]`` lists.

    Items are sorted by group id (stable, so the order inside a group is kept); ``B`` is the number of distinct
    ids and ``L`` the largest group. Returns ``(scores [B, L], relevance [B, L], index [n])`` where ``index[t]``
    is the flat position ``b * L + l`` of item ``t`` (so ``padded.reshape(-1)[index]`` gives the flat order back).
    Gradients flow from the padded scores back to the flat ones.
    """
    n = scores.shape[0]
    if n == 0:
        empty = scores.new_zeros((0, 0))
        return empty, relevance.new_full((0, 0), pad_value), torch.zeros(0, dtype=torch.long, device=scores.device)
    order = torch.argsort(group_ids, stable=True)
    _, counts = torch.unique_consecutive(group_ids[order], return_counts=True)
    n_lists, length = counts.shape[0], int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    list_of = torch.repeat_interleave(torch.arange(n_lists, device=scores.device), counts)
    position = torch.arange(n, device=scores.device) - starts[list_of]
    flat_sorted = list_of * length + position
    index = torch.empty_like(flat_sorted)
    index[order] = flat_sorted
    padded_scores = scores.new_zeros(n_lists * length).index_put((index,), scores)
    padded_rel = relevance.new_full((n_lists * length,), pad_value).index_put((index,), relevance)
    return padded_scores.view(n_lists, length), padded_rel.view(n_lists, length), index


def prepare_lists(scores: Tensor, relevance: Tensor, group_ids: Tensor | None = None) -> Lists:
    """Validate ranking inputs (padded ``[B, L]``, or flat ``[n]`` with ``group_ids``) and return :class:`Lists`.

    Raises ``ValueError`` for non-tensors, non-float scores, mismatched shapes, NaN/inf at real items, relevance
    values below 0 other than the padding value ``-1``, and group ids that are not a 1-D integer tensor.
    """
    check_tensor(scores, "scores")
    check_tensor(relevance, "relevance")
    if group_ids is not None:
        check_tensor(group_ids, "group_ids")
        check_floating(scores, "scores", ndim=1)
        if group_ids.ndim != 1 or group_ids.is_floating_point() or group_ids.dtype == torch.bool:
            raise ValueError(f"group_ids must be a 1-D integer tensor, got {group_ids.dtype} {tuple(group_ids.shape)}")
        if relevance.shape != scores.shape or group_ids.shape != scores.shape:
            raise ValueError(
                f"scores, relevance and group_ids must have the same shape [n], got {tuple(scores.shape)}, "
                f"{tuple(relevance.shape)} and {tuple(group_ids.shape)}"
            )
        _check_relevance(relevance, flat=True)
        check_floating(scores, "scores")
        scores, rel, _ = group_to_lists(scores, relevance.to(scores.dtype), group_ids.to(scores.device))
    else:
        check_floating(scores, "scores", ndim=2, finite=False)
        if relevance.shape != scores.shape:
            raise ValueError(
                f"relevance must have the shape of scores {tuple(scores.shape)}, got {tuple(relevance.shape)}"
            )
        _check_relevance(relevance, flat=False)
        rel = relevance.to(device=scores.device, dtype=scores.dtype)
    valid = rel != PAD
    if scores.numel() and not bool(torch.isfinite(scores[valid]).all()):
        raise ValueError("scores contain NaN or infinite values at real (non-padded) items")
    scores = torch.where(valid, scores, torch.zeros((), dtype=scores.dtype, device=scores.device))
    n_valid = valid.sum(-1)
    big = torch.finfo(scores.dtype).max
    top = torch.where(valid, rel, -big).amax(-1) if rel.shape[-1] else rel.new_zeros(rel.shape[0])
    bottom = torch.where(valid, rel, big).amin(-1) if rel.shape[-1] else rel.new_zeros(rel.shape[0])
    informative = (n_valid >= 2) & (top > bottom)
    return Lists(scores, rel, valid, informative)


def _check_relevance(relevance: Tensor, *, flat: bool) -> None:
    if relevance.dtype == torch.bool or relevance.is_complex():
        raise ValueError(f"relevance must be a real integer or floating tensor, got {relevance.dtype}")
    if relevance.numel() == 0:
        return
    rel = relevance.double()
    if not bool(torch.isfinite(rel).all()):
        raise ValueError("relevance contains NaN or infinite values")
    bad = (rel < 0) & (rel != PAD) if not flat else rel < 0
    if bool(bad.any()):
        what = "must be >= 0" if flat else "must be >= 0, or -1 to mark a padded slot"
        raise ValueError(f"relevance {what}; got {float(rel[bad][0])}")


def dcg_discounts(length: int, like: Tensor) -> Tensor:
    """``1 / log2(1 + r)`` for ranks ``r = 1 .. length`` (dtype and device of ``like``)."""
    ranks = torch.arange(1, length + 1, dtype=like.dtype, device=like.device)
    return 1.0 / torch.log2(1.0 + ranks)


def exp_gains(relevance: Tensor, valid: Tensor) -> Tensor:
    """Exponential gains ``2^y − 1`` of each list, scaled by ``2^−m`` with ``m`` the list's largest relevance
    (0 at padded slots): ``2^(y − m) − 2^(−m)``.

    Every NDCG-based loss uses gains only in ratios to a DCG of the same list, where the scale cancels; without it
    ``2^y`` overflows float32 from a relevance of 128 on (float64: 1024) and the loss is NaN.
    """
    zero = torch.zeros((), dtype=relevance.dtype, device=relevance.device)
    top = torch.where(valid, relevance, zero).amax(dim=-1, keepdim=True).clamp_min(0)
    return torch.where(valid, torch.exp2(relevance - top) - torch.exp2(-top), zero)


def ideal_dcg(relevance: Tensor, valid: Tensor, k: int | None = None) -> Tensor:
    """IDCG@k of each list with the gains of :func:`exp_gains` (``2^y − 1`` up to a per-list scale):
    ``Σ_{r ≤ k} g_(r) / log2(1 + r)``."""
    gains = exp_gains(relevance, valid)
    ideal, _ = torch.sort(gains, dim=-1, descending=True)
    disc = dcg_discounts(relevance.shape[-1], relevance)
    if k is not None:
        disc = torch.where(torch.arange(disc.shape[0], device=disc.device) < k, disc, torch.zeros_like(disc))
    return (ideal * disc).sum(-1)


def chunked_list_sums(
    fn: Callable[..., Tensor],
    tensors: tuple[Tensor, ...],
    *,
    pair_tensors: int = 8,
    max_memory: int | None = None,
) -> Tensor:
    """``Σ_chunks fn(*chunk)`` over chunks of lists, bounding the memory of the ``[b, L, L]`` pair temporaries.

    ``fn`` maps a chunk of lists (the first dimension of every tensor in ``tensors``) to a small vector of sums.
    The chunk size ``b`` keeps ``pair_tensors`` temporaries of ``b × L × L`` values under ``max_memory`` bytes
    (256 MiB by default). When there is more than one chunk and gradients are needed, each chunk runs under
    activation checkpointing, so its pair temporaries are freed after forward and recomputed in backward: peak
    memory is one chunk's, not the batch's.
    """
    n_lists, length = tensors[0].shape[0], max(tensors[0].shape[1], 1)
    budget = _budget(max_memory)
    per_list = pair_tensors * length * length * tensors[0].element_size()
    chunk = max(1, budget // per_list)
    if chunk >= n_lists:
        return fn(*tensors)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    total: Tensor | None = None
    for start in range(0, n_lists, chunk):
        part = tuple(t[start : start + chunk] for t in tensors)
        value = checkpoint(fn, *part, use_reentrant=False) if needs_grad else fn(*part)
        assert isinstance(value, Tensor)
        total = value if total is None else total + value
    assert total is not None
    return total


def _budget(max_memory: int | None) -> int:
    """The memory budget of a chunk of lists: ``max_memory`` bytes (checked > 0), 256 MiB when ``None``."""
    return DEFAULT_LIST_MEMORY if max_memory is None else int(check_positive(max_memory, "max_memory"))


def _list_chunk(n_lists: int, length: int, element_size: int, pair_tensors: int, max_memory: int | None) -> int:
    budget = _budget(max_memory)
    return max(1, min(n_lists, budget // (pair_tensors * max(length, 1) ** 2 * element_size)))


class _PairwiseSum(torch.autograd.Function):
    """``Σ_(i,j) w_ij φ(s_i − s_j)`` chunk by chunk, with a backward that recomputes each chunk's pair terms."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, scores: Tensor, select: PairSelector, link: PairLink, chunk: int
    ) -> tuple[Tensor, Tensor]:
        total = scores.new_zeros(())
        count = scores.new_zeros(())
        zero = scores.new_zeros(())
        for start in range(0, scores.shape[0], chunk):
            part = slice(start, start + chunk)
            s = scores[part]
            pairs, weight = select(s, part)
            total += torch.where(pairs, weight * link(s[:, :, None] - s[:, None, :], False), zero).sum()
            count += pairs.sum()
        ctx.save_for_backward(scores)
        ctx.select, ctx.link, ctx.chunk = select, link, chunk  # type: ignore[attr-defined]
        ctx.mark_non_differentiable(count)
        return total, count

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_total: Tensor, _grad_count: Tensor) -> tuple[Tensor | None, ...]:
        (scores,) = ctx.saved_tensors  # type: ignore[attr-defined]
        select, link, chunk = ctx.select, ctx.link, ctx.chunk  # type: ignore[attr-defined]
        grad = torch.zeros_like(scores)
        zero = scores.new_zeros(())
        for start in range(0, scores.shape[0], chunk):
            part = slice(start, start + chunk)
            s = scores[part]
            pairs, weight = select(s, part)
            slope = torch.where(pairs, weight * link(s[:, :, None] - s[:, None, :], True), zero)
            grad[part] = slope.sum(2) - slope.sum(1)  # d(s_i − s_j)/ds_i = 1, /ds_j = −1
        return grad * grad_total, None, None, None


def pairwise_sum(
    scores: Tensor,
    select: PairSelector,
    link: PairLink,
    *,
    pair_tensors: int = 6,
    max_memory: int | None = None,
) -> tuple[Tensor, Tensor]:
    """``(Σ_{(i,j) ∈ P} w_ij φ(s_i − s_j), |P|)`` over the pairs of every list, in bounded memory.

    ``select`` gives each chunk's pairs and (constant) weights, ``link`` the function φ and its derivative. The
    forward pass keeps no ``[b, L, L]`` tensor; the backward pass recomputes each chunk and accumulates
    ``∂/∂s_i = Σ_j w_ij φ'(s_i − s_j) − Σ_j w_ji φ'(s_j − s_i)`` directly, so peak memory is ``pair_tensors``
    ``b × L × L`` temporaries of one chunk (under ``max_memory`` bytes, 256 MiB by default) and there is no
    autograd graph over the pairs. First-order gradients only.
    """
    chunk = _list_chunk(scores.shape[0], scores.shape[-1], scores.element_size(), pair_tensors, max_memory)
    total, count = _PairwiseSum.apply(scores, select, link, chunk)
    return total, count
