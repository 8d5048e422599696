"""Lists of scored items for the ranking losses: validation, padding, flat→padded conversion, the pair evaluator.

A batch of ranking lists is ``(scores [B, L], relevance [B, L])`` where a relevance of ``-1`` marks a padded slot
(the allRank / TF-Ranking convention). A flat batch ``(scores [n], relevance [n], group_ids [n])`` (one row per
impression, as in a CTR log) is converted to that padded form by :func:`group_to_lists` with one sort and no
Python loop over groups.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from pairloss import memory
from pairloss._block_threads import block_workers, run_blocks
from pairloss._validation import check_floating, check_tensor, checks_enabled
from pairloss.links import Link
from pairloss.modules import BatchAxis
from pairloss.pairs import RelevancePairs
from pairloss.reducers import Reducer
from pairloss.weights import ListWeight, Uniform, dcg_discounts, exp_gains, ideal_dcg

__all__ = [
    "LIST_BATCH_AXES",
    "PAD",
    "Lists",
    "dcg_discounts",
    "exp_gains",
    "group_to_lists",
    "ideal_dcg",
    "list_pair_loss",
    "logistic_pair_sum",
    "pairwise_sum",
    "prepare_lists",
]

#: ``(scores of a block [b, L], the block's slice of lists) -> (pairs [b, L, L] bool, weights [b, L, L] or 1.0)``.
PairSelector = Callable[[Tensor, slice], tuple[Tensor, Tensor | float]]

#: Relevance value of a padded slot.
PAD = -1.0

#: How padded lists ``(scores [B, L], relevance [B, L])`` split over ranks are joined: lists along axis 0, the
#: shorter ones padded to the longest with the padding convention (score 0, relevance ``-1``).
LIST_BATCH_AXES = {"scores": BatchAxis(pad=0.0), "relevance": BatchAxis(pad=PAD)}


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
        if relevance.dtype == torch.bool or relevance.is_complex():
            raise ValueError(f"relevance must be a real integer or floating tensor, got {relevance.dtype}")
        rel = relevance.to(device=scores.device, dtype=scores.dtype)
        if scores.numel():
            _check_padded_values(scores, relevance, rel)
    valid = rel != PAD
    scores = torch.where(valid, scores, torch.zeros((), dtype=scores.dtype, device=scores.device))
    n_valid = valid.sum(-1)
    big = torch.finfo(scores.dtype).max
    top = torch.where(valid, rel, -big).amax(-1) if rel.shape[-1] else rel.new_zeros(rel.shape[0])
    bottom = torch.where(valid, rel, big).amin(-1) if rel.shape[-1] else rel.new_zeros(rel.shape[0])
    informative = (n_valid >= 2) & (top > bottom)
    return Lists(scores, rel, valid, informative)


def _check_padded_values(scores: Tensor, relevance: Tensor, rel: Tensor) -> None:
    """The value checks of padded lists, reduced on the device to one flag: finite scores at the real items,
    finite relevance, ``>= 0`` or the padding value. The flag is read once (one host synchronisation; the detailed
    ``ValueError`` is worked out only for a bad input), and not at all with the checks off
    (:func:`pairloss.set_checks`) or while :func:`torch.compile` traces."""
    if not checks_enabled():
        return
    real = rel != PAD
    good_relevance = torch.isfinite(rel) & (real.logical_not() | (rel >= 0))
    good = ((torch.isfinite(scores) | real.logical_not()) & good_relevance).all()
    if not bool(good):
        _check_relevance(relevance, flat=False)
        raise ValueError("scores contain NaN or infinite values at real (non-padded) items")


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


class _ListPairSums(torch.autograd.Function):
    """``(Σ_kept w φ(s_i − s_j), #kept)`` over the pairs of every list, block by block, with the gradient formed
    from ``φ'`` in the same pass: ``∂/∂s_i = Σ_j w_ij φ'(s_i − s_j) − Σ_j w_ji φ'(s_j − s_i)`` (kept pairs only).
    The backward only scales it; no block is recomputed."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        scores: Tensor,
        select: PairSelector,
        link: Link,
        reducer: Reducer,
        block_size: int,
        weighted_count: bool,
    ) -> tuple[Tensor, Tensor]:
        total = scores.new_zeros((), dtype=torch.float64)
        count = scores.new_zeros((), dtype=torch.float64)
        wants_gradient = bool(ctx.needs_input_grad[0])  # type: ignore[attr-defined]
        grad = torch.zeros_like(scores)
        zero = scores.new_zeros(())
        for start, stop in memory.row_blocks(scores.shape[0], block_size):
            s = scores[start:stop]
            pairs, weight = select(s, slice(start, stop))
            margins = s[:, :, None] - s[:, None, :]
            value, slope = link.value_and_derivative(margins) if wants_gradient else (link.value(margins), None)
            if isinstance(weight, float) and weight == 1.0:
                kept = pairs & reducer.keep(value) if reducer.filters else pairs
                total += torch.where(kept, value, zero).sum()
                count += kept.count_nonzero()
                slope = None if slope is None else torch.where(kept, slope, zero)
            else:
                kept = pairs & reducer.keep(value * weight) if reducer.filters else pairs
                kept_weight = torch.where(kept, weight, zero)  # the weight of each kept pair, 0 elsewhere
                total += (value * kept_weight).sum()
                count += kept_weight.sum() if weighted_count else kept.count_nonzero()
                slope = None if slope is None else slope.mul_(kept_weight)
            if slope is not None:
                grad[start:stop] = slope.sum(2) - slope.sum(1)  # d(s_i − s_j)/ds_i = 1, /ds_j = −1
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(count)
        return total.to(scores.dtype), count.to(scores.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_total: Tensor, _grad_count: Tensor) -> tuple[Tensor | None, ...]:
        (grad,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad * grad_total, None, None, None, None, None


def pairwise_sum(
    scores: Tensor,
    select: PairSelector,
    link: Link,
    *,
    reducer: Reducer | None = None,
    pair_tensors: int = 6,
    weighted_count: bool = False,
) -> tuple[Tensor, Tensor]:
    """``(Σ_{(i,j) ∈ P, kept} w_ij φ(s_i − s_j), #kept)`` over the pairs of every list, in bounded memory.

    ``select`` gives each block's pairs and (constant) weights, ``link`` the function φ and its derivative,
    ``reducer`` which pairs are kept (all by default); ``weighted_count`` counts each kept pair by its weight
    (``Σ w_ij``, for a weighted mean) instead of by one. Each block holds ``pair_tensors`` ``b × L × L`` temporaries
    (``b`` from the memory budget, :mod:`pairloss.memory`, each temporary under
    :data:`~pairloss.memory.MAX_TEMPORARY_BYTES` so that the allocator reuses it), and its gradient is formed from
    ``φ'`` in the same pass, so no block is kept for autograd or recomputed. First-order gradients only.
    """
    row_bytes = max(scores.shape[-1], 1) ** 2 * scores.element_size()
    block_size = memory.rows_per_block(
        scores.shape[0], row_bytes, pair_tensors, max_temporary=memory.MAX_TEMPORARY_BYTES
    )
    total, count = _ListPairSums.apply(scores, select, link, reducer or Reducer(), block_size, weighted_count)
    return total, count


def list_pair_loss(
    lists: Lists, pairs: RelevancePairs, link: Link, weight: ListWeight | Uniform, reducer: Reducer
) -> Tensor:
    """The reduced loss ``reducer({w_ij φ(s_i − s_j) : (i, j) ∈ pairs of each list})`` (see :func:`pairwise_sum`)."""

    def select(s: Tensor, part: slice) -> tuple[Tensor, Tensor | float]:
        y, valid = lists.relevance[part], lists.valid[part]
        chosen = pairs.mask(y, valid)
        if isinstance(weight, Uniform):
            return chosen, weight.value
        return chosen, weight(s, y, valid)

    total, count = pairwise_sum(lists.scores, select, link, reducer=reducer, pair_tensors=10)
    return reducer.finish(total, count)


#: How :func:`logistic_pair_sum` forms a block's pair weights from the per-item vectors ``a`` and ``b`` ``[B, L]``:
#: ``"order"``: ``W_ij = [a_i > b_j]``; ``"gap"``: ``W_ij = max(a_i − b_j, 0)``; ``"product"``: ``W_ij = a_i b_j``.
PAIR_FORMS = ("order", "gap", "product")


def _pair_weights(a: Tensor, b: Tensor, form: str, factor: Tensor | None, out: Tensor) -> Tensor:
    """Write the ``[b, L, L]`` weights of one block (see :data:`PAIR_FORMS`), times ``factor [L, L]`` when given,
    into ``out``."""
    if form == "order":
        torch.gt(a[:, :, None], b[:, None, :], out=out)
    elif form == "gap":
        torch.sub(a[:, :, None], b[:, None, :], out=out).clamp_min_(0.0)
    else:
        torch.mul(a[:, :, None], b[:, None, :], out=out)
    return out if factor is None else out.mul_(factor)


class _LogisticPairSums(torch.autograd.Function):
    """``Σ_ij W_ij log(1 + e^{−σ(s_i − s_j)})`` over all lists, block by block, with the gradient formed in the same
    pass: ``∂/∂s_i = σ Σ_j (W_ji q_ji − W_ij q_ij)``, ``q_ij = sigmoid(−σ(s_i − s_j))``. Per block: the weights, one
    broadcast difference, one log-sigmoid, one sigmoid, written into three ``[b, L, L]`` workspaces allocated once
    per thread and reused by each of its blocks (fresh temporaries cost more than the arithmetic on them); no masks,
    no host synchronisation. On the CPU the blocks are shared by threads
    (:func:`pairloss._block_threads.run_blocks`); each block's sum goes to its own slot, so the total is the same
    for any schedule."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        scores: Tensor,
        a: Tensor,
        b: Tensor,
        factor: Tensor | None,
        form: str,
        sigma: float,
        block_size: int,
    ) -> Tensor:
        wants_gradient = bool(ctx.needs_input_grad[0])  # type: ignore[attr-defined]
        scaled = scores.detach() if sigma == 1.0 else scores.detach() * sigma
        n_lists, length = scores.shape
        blocks = memory.row_blocks(n_lists, block_size)
        totals = scores.new_zeros(len(blocks), dtype=torch.float64)
        grad = torch.zeros_like(scores) if wants_gradient else None
        rows = min(block_size, n_lists)

        def run(indices: Iterator[int]) -> None:
            weight_space, margin_space, value_space = (scores.new_empty((rows, length, length)) for _ in range(3))
            for index in indices:
                start, stop = blocks[index]
                size = stop - start
                t = scaled[start:stop]
                weights = _pair_weights(a[start:stop], b[start:stop], form, factor, weight_space[:size])
                z = torch.sub(t[:, :, None], t[:, None, :], out=margin_space[:size])  # σ(s_i − s_j)
                value = torch.ops.aten.log_sigmoid.out(z, out=value_space[:size])  # −log(1 + e^{−z})
                totals[index] = value.mul_(weights).sum().neg()
                if grad is not None:
                    q = z.neg_().sigmoid_().mul_(weights)
                    grad[start:stop] = q.sum(1) - q.sum(2)

        run_blocks(len(blocks), block_workers(scores.device, len(blocks)), run)
        if grad is not None:
            ctx.save_for_backward(grad if sigma == 1.0 else grad.mul_(sigma))
        return totals.sum().to(scores.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_total: Tensor) -> tuple[Tensor | None, ...]:
        (grad,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad * grad_total, None, None, None, None, None, None


def logistic_pair_sum(
    scores: Tensor, a: Tensor, b: Tensor, *, form: str, factor: Tensor | None = None, sigma: float = 1.0
) -> Tensor:
    """``Σ_lists Σ_ij W_ij log(1 + exp(−σ (s_i − s_j)))`` with constant pair weights ``W`` built per block from
    ``a``, ``b`` ``[B, L]`` (:data:`PAIR_FORMS`) and an optional rank factor ``factor [L, L]``; ``W`` is 0 off the
    pairs. The weighted logistic loss of RankNet and LambdaLoss, in blocks whose temporaries the memory budget
    bounds (:mod:`pairloss.memory`), with the gradient formed in the forward pass (first order only)."""
    if form not in PAIR_FORMS:
        raise ValueError(f"form must be one of {PAIR_FORMS}, got {form!r}")
    row_bytes = max(scores.shape[-1], 1) ** 2 * scores.element_size()
    block_size = memory.rows_per_block(scores.shape[0], row_bytes, 3, max_temporary=memory.MAX_TEMPORARY_BYTES)
    total: Tensor = _LogisticPairSums.apply(scores, a, b, factor, form, float(sigma), block_size)
    return total
