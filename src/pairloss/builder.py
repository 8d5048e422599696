"""One builder: pairs, a similarity, a weight, a link and a reducer assembled into a loss on the row-block engine.

    soft_contrastive = pairloss.pair_loss(links.Logistic(sigma=10.0), pos_margin=0.5, neg_margin=0.5)
    loss = soft_contrastive(embeddings, labels)

The loss has one of two forms, chosen by its link:

* **pair form** (an elementwise :class:`~pairloss.links.Link`): every selected pair is an element with loss
  ``w_ij · φ(z_ij)``, where the margin is ``z_ij = s_ij − m_pos`` for a positive and ``m_neg − s_ij`` for a
  negative pair (a distance flips both signs, so ``m_pos`` and ``m_neg`` are always in the score's own units, as in
  PML). The reducer reduces the positive and the negative pairs on their own and adds the two results (PML's
  convention for the contrastive loss), or, with ``pooled=True``, reduces them together.
* **row form** (a :class:`~pairloss.links.LogSumExp` row link): every anchor is an element,
  ``ℓ_i = ψ⁺_i + ψ⁻_i`` with ``ψ`` the row link over the anchor's positive (negative) margins, or
  ``ℓ_i = φ_c(−(ψ⁺_i + ψ⁻_i))`` with an outer ``combine`` link (a hinge: generalized lifted structure; a logistic:
  circle loss).

Either way the loss runs on :func:`pairloss.engine.row_block_sums`: each block of anchors returns the reducer's two
sums (``Σ_kept ℓ`` and ``#kept``) together with their *slopes*, ``∂/∂s_ij``, formed from the link's derivative, so
the engine accumulates the gradient during the forward pass. There is no hand-written backward, no recomputed
block and no autograd graph over the pairs; memory is one block's, set by the memory budget
(:mod:`pairloss.memory`). A hinge link takes a shortcut: given which pairs are active its sum is linear in the
scores, so a block needs two masked sums, and the active-pair masks are its slopes (sparse products when few
pairs are active). A pair form with uniform weights and label pairs is symmetric in ``(i, j)``, so the engine scores
each unordered pair once.

With :class:`~pairloss.pairs.RelevancePairs` the builder returns a ranking loss on lists of scores,
``loss(scores, relevance, group_ids=None)``, whose elements are the pairs ``(i, j)`` of a list with margin
``z = s_i − s_j``, evaluated in blocks of lists under the same budget and with the same slopes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from pairloss import links as links_module
from pairloss._sparse_pairs import SparsePairWeights
from pairloss._tracing import host_reads_allowed
from pairloss._validation import check_pair_inputs
from pairloss.engine import PairBlock, RowFunction, RowSums, cross_rank_hook, row_block_sums, sync_free
from pairloss.links import Hinge, Link, LogSumExp, Scaled
from pairloss.modules import EmbeddingLoss, PairLoss
from pairloss.pairs import LabelPairs, MinedPairs, PairSelector, RelevancePairs, ViewPairs, reject_positional_reference
from pairloss.reducers import DoNothingReducer, MeanReducer, Reducer, get_reducer
from pairloss.similarity import BaseSimilarity, CosineSimilarity
from pairloss.weights import ListWeight, PairWeight, Uniform

__all__ = [
    "ComposedListLoss",
    "ComposedPairLoss",
    "PairLossSpec",
    "evaluate_pairs",
    "pair_loss",
]

#: Per kind of pair, the engine statistics: three sums (the first with a slope) that give ``Σ_kept ℓ`` and
#: ``#kept``.
_STATS_PER_KIND = 3


# Shared defaults (stateless objects), filled in by ``__post_init__``: a dataclass default or factory of a class
# instance cannot be traced by ``torch.compile`` when a spec is built inside a compiled function.
_UNIFORM = Uniform()
_LABEL_PAIRS = LabelPairs()
_MEAN = MeanReducer()


@dataclass(frozen=True)
class PairLossSpec:
    """The parts of a pair loss (see :func:`pair_loss` for their meaning)."""

    positive_link: Link | LogSumExp
    negative_link: Link | LogSumExp
    similarity: BaseSimilarity
    pos_margin: float = 0.0
    neg_margin: float = 0.0
    weight: PairWeight = None  # type: ignore[assignment]  # Uniform() (set in __post_init__)
    pairs: PairSelector = None  # type: ignore[assignment]  # LabelPairs()
    reducer: Reducer = None  # type: ignore[assignment]  # MeanReducer()
    combine: Link | None = None
    pooled: bool = False
    both_kinds: bool = False
    generic_pair_rule: bool = False

    def __post_init__(self) -> None:
        for name, default in (("weight", _UNIFORM), ("pairs", _LABEL_PAIRS), ("reducer", _MEAN)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        row_links = [isinstance(link, LogSumExp) for link in (self.positive_link, self.negative_link)]
        if any(not isinstance(link, Link | LogSumExp) for link in (self.positive_link, self.negative_link)):
            raise ValueError("links must be pairloss.links objects (a Link, or LogSumExp for the row form)")
        if row_links[0] != row_links[1]:
            raise ValueError("the positive and negative links must both be row links (LogSumExp) or both pair links")
        if not isinstance(self.similarity, BaseSimilarity):
            raise ValueError(f"similarity must be a pairloss.similarity object, got {self.similarity!r}")
        if not isinstance(self.weight, PairWeight):
            raise ValueError(f"weight must be a pairloss.weights.PairWeight, got {self.weight!r}")
        if not isinstance(self.reducer, Reducer):
            raise ValueError(f"reducer must be a pairloss.reducers.Reducer, got {self.reducer!r}")
        for name in ("pos_margin", "neg_margin"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.row_form:
            if self.pooled:
                raise ValueError("pooled applies to the pair form; the row form has one element per anchor")
            if self.weight.on == "loss" and not isinstance(self.weight, Uniform):
                raise ValueError("the row form takes margin weights (e.g. weights.Circle) or uniform weights")
        elif self.combine is not None or self.both_kinds:
            raise ValueError("combine and both_kinds apply to the row form (LogSumExp links)")

    @property
    def row_form(self) -> bool:
        return isinstance(self.positive_link, LogSumExp)

    @property
    def orientation(self) -> float:
        """+1 for a similarity (larger = closer), −1 for a distance."""
        return 1.0 if self.similarity.is_inverted else -1.0

    def margin_affine(self, positive: bool) -> tuple[float, float]:
        """``(a, c)`` with the margin ``z = a · score + c`` of a positive (or negative) pair."""
        sign = self.orientation
        return (sign, -sign * self.pos_margin) if positive else (-sign, sign * self.neg_margin)

    def describe(self) -> str:
        """The loss in one line."""
        if self.row_form:
            inner = "ψ⁺_i + ψ⁻_i"
            return f"{self.reducer!r} over anchors of " + (f"{self.combine!r}(−({inner}))" if self.combine else inner)
        return f"{self.reducer!r} over pairs of w·φ(z): φ⁺={self.positive_link!r}, φ⁻={self.negative_link!r}"


# ------------------------------------------------------------------------------------------------ pair form


def _hinge_factor(link: Link, weight: PairWeight) -> tuple[float, float] | None:
    """``(F, m)`` when the link times the weight is ``F · [m − z]_+`` with ``F > 0`` (the hinge shortcut)."""
    factor = 1.0
    while isinstance(link, Scaled):
        factor *= link.factor
        link = link.link
    if not isinstance(link, Hinge) or not isinstance(weight, Uniform):
        return None
    factor *= weight.value
    return (factor, link.margin) if factor > 0 else None


def _hinge_terms(
    s: Tensor, mask: Tensor, a: float, c: float, factor: float, margin: float, reducer: Reducer
) -> tuple[list[Tensor], Tensor]:
    """``[Σ_kept-active s, #kept-active, #kept]`` for ``ℓ = F [m − (a s + c)]_+`` (``a = ±1``); the slope of the
    first sum is the kept-active mask. Active pairs have ``ℓ > 0``; those with ``low < ℓ < high`` are kept."""
    k0 = margin - c
    low = 0.0 if reducer.low is None else max(reducer.low, 0.0)
    upper = k0 - low / factor  # kept-active: a·s < upper
    active = (s < upper) if a > 0 else (s > -upper)
    active.logical_and_(mask)
    lower = None if reducer.high is None else k0 - reducer.high / factor  # and a·s > lower
    if lower is not None:
        active.logical_and_((s > lower) if a > 0 else (s < -lower))
    total = torch.where(active, s, 0.0).sum().double()
    n_active = active.count_nonzero().double()
    if reducer.average and reducer.keeps_zero():
        counted = mask if lower is None else mask & ((s > lower) if a > 0 else (s < -lower))
        n_kept = counted.count_nonzero().double()
    else:
        n_kept = n_active
    return [total, n_active, n_kept], active


def _general_terms(
    s: Tensor,
    mask: Tensor,
    count: Tensor | None,
    a: float,
    c: float,
    link: Link,
    weight: PairWeight,
    positive: bool,
    reducer: Reducer,
) -> tuple[list[Tensor], Tensor]:
    """``[Σ_kept ℓ, #kept, 0]`` for ``ℓ = w φ(α (a s + c))`` and the slope of the first sum."""
    z = s + c if a == 1.0 else (c - s if a == -1.0 else s * a + c)
    chain = a
    if weight.on == "margin":
        alpha = torch.as_tensor(weight(s, mask, positive), dtype=s.dtype, device=s.device)
        z = z * alpha
        chain = alpha * a  # type: ignore[assignment]
    value, derivative = link.value_and_derivative(z)
    if weight.on == "loss":
        w = weight(s, mask, positive)
        if not (isinstance(w, float) and w == 1.0):
            value = value * w
            derivative = derivative * w
    kept = mask & reducer.keep(value) if reducer.filters else mask
    zero = s.new_zeros(())
    if count is not None:
        total = torch.where(kept, value * count, zero).sum().double()
        n_kept = torch.where(kept, count, zero).sum().double()
        slope = torch.where(kept, derivative * chain * count, zero)
    else:
        total = torch.where(kept, value, zero).sum().double()
        n_kept = kept.count_nonzero().double()
        slope = torch.where(kept, derivative * chain, zero)
    return [total, n_kept, total.new_zeros(())], slope


def _kind_finish(spec: PairLossSpec, positive: bool, stats: Tensor, shortcut: tuple[float, float] | None) -> Tensor:
    """``(Σ_kept ℓ, #kept)`` of one kind of pair from its three statistics."""
    if shortcut is None:
        return stats[:2]
    factor, margin = shortcut
    a, c = spec.margin_affine(positive)
    total = factor * ((margin - c) * stats[1] - a * stats[0])
    return torch.stack([total, stats[2]])


def _pair_form_row(
    spec: PairLossSpec, mined: bool, count_pairs: bool
) -> tuple[RowFunction, list[tuple[float, float] | None]]:
    links = (spec.positive_link, spec.negative_link)
    shortcuts = [None if mined else _hinge_factor(link, spec.weight) for link in links]  # type: ignore[arg-type]

    @torch.no_grad()
    def row(block: PairBlock) -> RowSums:
        values: list[Tensor] = []
        slopes: list[Tensor | None] = []
        masks = ((block.positive, block.positive_count), (block.negative, block.negative_count))
        for positive, (mask, count), link, shortcut in zip((True, False), masks, links, shortcuts, strict=True):
            a, c = spec.margin_affine(positive)
            if shortcut is not None and count is None:
                terms, slope = _hinge_terms(block.sim, mask, a, c, *shortcut, spec.reducer)
            else:
                terms, slope = _general_terms(
                    block.sim,
                    mask,
                    None if count is None else count.to(block.sim.dtype),
                    a,
                    c,
                    link,  # type: ignore[arg-type]
                    spec.weight,
                    positive,
                    spec.reducer,
                )
            values += terms
            slopes += [slope, None, None]
        if count_pairs:
            values += [_pair_count(block.positive, block.positive_count)]
            values += [_pair_count(block.negative, block.negative_count)]
        else:
            values += [block.sim.new_zeros((), dtype=torch.float64)] * 2
        slopes += [None, None]
        return RowSums(torch.stack([v.to(torch.float64) for v in values]), tuple(slopes))

    return row, shortcuts


def _fused_hinge_row(
    spec: PairLossSpec, shortcuts: list[tuple[float, float] | None], count_pairs: bool
) -> RowFunction | None:
    """The pair form's row when both kinds are hinges on label pairs (the contrastive loss): both active-pair
    masks written as 0/1 floats into the engine's slope workspace, and all six sums from it in three reductions.
    ``None`` when the reducer has an upper bound (the general row handles it)."""
    reducer = spec.reducer
    if reducer.high is not None or any(shortcut is None for shortcut in shortcuts):
        return None
    low = 0.0 if reducer.low is None else max(reducer.low, 0.0)
    bounds = []  # per kind: active when a·s < upper
    for positive, shortcut in zip((True, False), shortcuts, strict=True):
        factor, margin = shortcut  # type: ignore[misc]
        a, c = spec.margin_affine(positive)
        bounds.append((a, margin - c - low / factor))
    zeros_count = reducer.average and reducer.keeps_zero()
    infinities: dict[tuple[torch.dtype, torch.device, bool], Tensor] = {}  # made once per call

    @torch.no_grad()
    def row(block: PairBlock) -> RowSums:
        s = block.sim
        active = block.slope_buffer(2)
        for k, (mask, (a, upper)) in enumerate(zip((block.positive, block.negative), bounds, strict=True)):
            # the kind's scores (±inf off it, where the comparison fails), then the comparison written in place as
            # 0/1 floats: two passes, no bool temporary and no conversion
            key = (s.dtype, s.device, a > 0)
            if key not in infinities:
                infinities[key] = torch.tensor(float("inf") if a > 0 else float("-inf"), dtype=s.dtype, device=s.device)
            kind_scores = torch.where(mask, s, infinities[key], out=active[k])
            torch.lt(kind_scores, upper, out=active[k]) if a > 0 else torch.gt(kind_scores, -upper, out=active[k])
        totals = torch.mv(active.view(2, -1), s.reshape(-1))
        # counts exact in float32: a block holds fewer than 2**24 pairs (its temporaries stay under 32 MiB)
        n_active = active.sum((1, 2))
        pairs = None
        if zeros_count or count_pairs:
            pairs = torch.stack([block.positive.count_nonzero(), block.negative.count_nonzero()]).to(s.dtype)
        kept = pairs if zeros_count else n_active
        stats = torch.stack([totals, n_active, kept], dim=1).view(-1)  # type: ignore[list-item]
        counted = pairs if count_pairs else stats.new_zeros(2)
        values = torch.cat([stats, counted]).double()  # type: ignore[list-item]
        slopes = (active[0], None, None, active[1], None, None, None, None)
        return RowSums(values, slopes, stacked=active)

    return row


def _pair_count(mask: Tensor, count: Tensor | None) -> Tensor:
    return mask.count_nonzero().double() if count is None else count.sum(dtype=torch.float64)


# ------------------------------------------------------------------------------------------------- row form


def _added_slopes(first: Tensor | SparsePairWeights, second: Tensor | SparsePairWeights) -> Tensor:
    """The sum of two slopes as one dense ``[b, M]`` tensor."""
    if isinstance(first, SparsePairWeights):
        first, second = second, first
    dense = first.to_dense() if isinstance(first, SparsePairWeights) else first
    if isinstance(second, SparsePairWeights):
        return dense.index_put_((second.rows, second.columns), second.values, accumulate=True)
    return dense.add_(second)


def _row_form_row(spec: PairLossSpec) -> RowFunction:
    links: tuple[LogSumExp, LogSumExp] = (spec.positive_link, spec.negative_link)  # type: ignore[assignment]
    margin_weight = spec.weight if spec.weight.on == "margin" else None

    @torch.no_grad()
    def row(block: PairBlock) -> RowSums:
        s = block.sim
        parts, n_pairs = [], []
        for positive, mask, link in ((True, block.positive, links[0]), (False, block.negative, links[1])):
            a, c = spec.margin_affine(positive)
            scale = None if margin_weight is None else _margin_scale(margin_weight, positive)
            n_pairs.append(mask.count_nonzero())
            gathered = links_module.SPARSE_MASK_DENSITY > 0 and host_reads_allowed(s.device)
            n_active = int(n_pairs[-1]) if gathered else mask.numel()
            parts.append(link.rows(s, mask, a, c, n_active, scale))
        (value_p, slope_p, has_p), (value_n, slope_n, has_n) = parts
        inner = value_p + value_n
        if spec.combine is not None:
            loss, derivative = spec.combine.value_and_derivative(-inner)
            row_factor: Tensor | None = -derivative
        else:
            loss, row_factor = inner, None
        if spec.both_kinds:
            valid = has_p & has_n
            loss = torch.where(valid, loss, 0.0)
            row_factor = valid.to(s.dtype) if row_factor is None else torch.where(valid, row_factor, 0.0)
        if spec.reducer.filters:
            kept = spec.reducer.keep(loss)
            loss = torch.where(kept, loss, 0.0)
            row_factor = kept.to(s.dtype) if row_factor is None else torch.where(kept, row_factor, 0.0)
            n_kept = kept.count_nonzero().double()
        else:
            n_kept = torch.tensor(float(s.shape[0]), dtype=torch.float64, device=s.device)
        slope = _added_slopes(slope_p, slope_n)
        if row_factor is not None:
            slope.mul_(row_factor[:, None])
        values = [
            loss.sum(dtype=torch.float64),
            n_kept,
            n_pairs[0].double(),
            n_pairs[1].double(),
        ]
        return RowSums(torch.stack(values), (slope, None, None, None))

    return row


def _fused_log_sum_exp_row(spec: PairLossSpec, count_pairs: bool) -> RowFunction | None:
    """The row form's row for two ``LogSumExp`` links with the 1, uniform weights, no outer link and no filter
    (the multi-similarity loss): both kinds' soft maxima in one pass each over the block, their slopes summed
    straight into the engine's slope workspace. ``None`` for any other row form (the general row handles it).

    Per kind ``k`` (``u = A_k s + C_k`` on the kind's pairs, ``A_k = −γ_k a_k``, ``C_k = −γ_k c_k`` for the margin
    ``z = a_k s + c_k``): the row's shift ``σ = max(0, max_j u_ij)`` from the masked extreme score, then
    ``E = e^{u − σ}`` (0 off the kind), ``ψ = (σ + log(e^{−σ} + Σ_j E_ij)) / γ_k`` and
    ``∂ψ/∂s_ij = −a_k E_ij / (e^{−σ} + Σ_j E_ij)``.
    """
    links: tuple[LogSumExp, LogSumExp] = (spec.positive_link, spec.negative_link)  # type: ignore[assignment]
    if (
        spec.combine is not None
        or spec.both_kinds
        or spec.reducer.filters
        or not isinstance(spec.weight, Uniform)
        or spec.weight.value != 1.0
        or not all(link.add_one for link in links)
    ):
        return None
    affine = [spec.margin_affine(positive) for positive in (True, False)]
    gammas = [link.gamma for link in links]
    slope_scale = [-a for a, _ in affine]
    exponent_scale = [-gamma * a for gamma, (a, _) in zip(gammas, affine, strict=True)]
    exponent_offset = [-gamma * c for gamma, (_, c) in zip(gammas, affine, strict=True)]

    cache: dict[tuple[torch.dtype, torch.device], Tensor] = {}  # the constants, made once per call
    tails: dict[tuple[int, torch.device], Tensor] = {}

    @torch.no_grad()
    def row(block: PairBlock) -> RowSums:
        s = block.sim
        key = (s.dtype, s.device)
        if key not in cache:
            cache[key] = s.new_tensor([exponent_scale, exponent_offset, gammas, slope_scale, [0.0, 0.0]])
        constants = cache[key]
        zero = constants[4, 0]
        terms, extremes = [], []
        for mask, scale in zip((block.positive, block.negative), exponent_scale, strict=True):
            # the kind's scores, ±inf off the kind: the extreme that maximises u, then e^{u − σ} in place
            masked = torch.where(mask, s, float("-inf") if scale > 0 else float("inf"))
            extremes.append(masked.amax(dim=1) if scale > 0 else masked.amin(dim=1))
            terms.append(masked)
        shift = torch.addcmul(constants[1], torch.stack(extremes, dim=1), constants[0]).clamp_min_(0)
        offset = constants[1] - shift
        sums = []
        floor = math.log(torch.finfo(s.dtype).tiny) + 2.0
        for k, (mask, masked, scale) in enumerate(
            zip((block.positive, block.negative), terms, exponent_scale, strict=True)
        ):
            # floored before exp (e^{−∞} and underflowing arguments take exp's slow path, measured 2.5× slower on a
            # CPU), then the entries off the kind set to 0
            torch.add(offset[:, k : k + 1], masked, alpha=scale, out=masked).clamp_min_(floor).exp_()
            torch.where(mask, masked, zero, out=masked)
            sums.append(masked.sum(dim=1))
        denominator = torch.stack(sums, dim=1).add_(shift.neg().exp_())
        loss = (shift + denominator.log()).div_(constants[2]).sum(dim=1)
        coefficient = constants[3] / denominator
        slope = block.slope_buffer(1)
        torch.mul(terms[0], coefficient[:, 0:1], out=slope[0])
        slope[0].addcmul_(terms[1], coefficient[:, 1:2])
        rows_key = (s.shape[0], s.device)
        if rows_key not in tails:  # [#anchors, 0, 0]: the same for every block of one size
            tails[rows_key] = torch.tensor([float(s.shape[0]), 0.0, 0.0], dtype=torch.float64, device=s.device)
        tail = tails[rows_key]
        if count_pairs:
            counted = torch.stack([block.positive.count_nonzero(), block.negative.count_nonzero()]).double()
            tail = torch.cat([tail[:1], counted])
        values = torch.cat([loss.sum(dim=0, dtype=torch.float64, keepdim=True), tail])
        return RowSums(values, (slope[0], None, None, None), stacked=slope)

    return row


def _margin_scale(weight: PairWeight, positive: bool) -> Any:
    """The margin weights of scores, elementwise (a margin weight does not look at the rest of the row)."""

    def scale(values: Tensor) -> Tensor:
        return torch.as_tensor(weight(values, None, positive), dtype=values.dtype)

    return scale


def _label_pair_counts(labels: Tensor, ref_labels: Tensor | None) -> tuple[Tensor, Tensor] | None:
    """The numbers of positive and negative (ordered) pairs from 1-D class ids alone, ``O(N log N)`` with static
    shapes (a sort and two binary searches, no read-back of the number of classes); ``None`` for multi-hot
    labels."""
    if labels.ndim != 1:
        return None
    references = labels if ref_labels is None else ref_labels
    ordered = references.sort().values
    same = torch.searchsorted(ordered, labels, right=True) - torch.searchsorted(ordered, labels)
    n_self = labels.numel() if ref_labels is None else 0
    n_positive = same.sum(dtype=torch.float64) - n_self
    n_negative = float(labels.numel()) * references.numel() - n_positive - n_self
    return n_positive, n_negative


# --------------------------------------------------------------------------------------------- evaluation


def _labels_for(spec: PairLossSpec, embeddings: Tensor, labels: Tensor | None, indices_tuple: Any) -> Tensor:
    if isinstance(spec.pairs, ViewPairs) and indices_tuple is None:
        if labels is not None:
            raise ValueError("ViewPairs derives the positives from the batch layout; call the loss without labels")
        return spec.pairs.objects(embeddings.shape[0], embeddings.device)
    if labels is None:
        if indices_tuple is None:
            raise ValueError("labels are required unless an indices_tuple gives the pairs")
        return torch.zeros(embeddings.shape[0], dtype=torch.long, device=embeddings.device)
    return labels


def evaluate_pairs(
    spec: PairLossSpec,
    embeddings: Tensor,
    labels: Tensor | None = None,
    indices_tuple: tuple[Tensor, ...] | None = None,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    block_size: int | None = None,
) -> Any:
    """The loss of ``spec`` on a batch: PML's call ``(embeddings, labels, indices_tuple, ref_emb, ref_labels)``.

    Returns a scalar tensor, or PML's per-element loss dictionary for :class:`~pairloss.reducers.DoNothingReducer`.
    """
    reject_positional_reference(indices_tuple)
    labels = _labels_for(spec, embeddings, labels, indices_tuple)
    if ref_emb is not None and ref_labels is None and indices_tuple is not None:
        ref_labels = torch.zeros(ref_emb.shape[0], dtype=torch.long, device=ref_emb.device)
    embeddings, labels, ref_emb, ref_labels = check_pair_inputs(embeddings, labels, ref_emb, ref_labels)
    n_references = embeddings.shape[0] if ref_emb is None else ref_emb.shape[0]
    pairs: PairSelector = spec.pairs
    if indices_tuple is not None:
        if cross_rank_hook() is not None:
            raise ValueError("mined indices refer to this process's batch; they cannot be used across ranks")
        pairs = MinedPairs(indices_tuple, embeddings.shape[0], n_references)
    if isinstance(spec.reducer, DoNothingReducer):
        return _per_element(replace(spec, pairs=pairs), embeddings, labels, ref_emb, ref_labels)
    mined = isinstance(pairs, MinedPairs)
    label_counts = None
    if spec.generic_pair_rule and not mined and isinstance(pairs, LabelPairs) and cross_rank_hook() is None:
        label_counts = _label_pair_counts(labels, ref_labels)
    shortcuts: list[tuple[float, float] | None] = []
    count_pairs = spec.generic_pair_rule and label_counts is None
    if spec.row_form:
        # the fused row is dense: on the CPU's default path the general row's gathered positives are faster
        fused = None if mined or not sync_free(embeddings.device) else _fused_log_sum_exp_row(spec, count_pairs)
        row = _row_form_row(spec) if fused is None else fused
    else:
        row, shortcuts = _pair_form_row(spec, mined, count_pairs=count_pairs)
        fused = None if mined else _fused_hinge_row(spec, shortcuts, count_pairs)
        row = row if fused is None else fused
    symmetric = not spec.row_form and isinstance(spec.weight, Uniform) and not mined
    sums = row_block_sums(
        row,
        embeddings,
        labels,
        ref_emb,
        ref_labels,
        similarity=spec.similarity,
        pairs=pairs,
        block_size=block_size,
        working_copies=6 if not spec.row_form else 8,
        symmetric=symmetric,
    )
    if spec.row_form:
        loss = spec.reducer.finish(sums[0], sums[1])
        n_positive, n_negative = sums[2], sums[3]
    else:
        k = _STATS_PER_KIND
        positive = _kind_finish(spec, True, sums[:k], shortcuts[0])
        negative = _kind_finish(spec, False, sums[k : 2 * k], shortcuts[1])
        if spec.pooled:
            loss = spec.reducer.finish(positive[0] + negative[0], positive[1] + negative[1])
        else:
            loss = spec.reducer.finish(positive[0], positive[1]) + spec.reducer.finish(negative[0], negative[1])
        n_positive, n_negative = sums[2 * k], sums[2 * k + 1]
    if spec.generic_pair_rule:
        if isinstance(pairs, MinedPairs):
            n_positive, n_negative = sums.new_tensor(pairs.n_positive), sums.new_tensor(pairs.n_negative)
        elif label_counts is not None:
            n_positive, n_negative = label_counts
        keep = (n_positive > 1) | (n_negative > 1)
        loss = torch.where(keep, loss, torch.zeros_like(loss))
    return loss


def _per_element(
    spec: PairLossSpec, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None, ref_labels: Tensor | None
) -> dict[str, dict[str, Any]]:
    """PML's loss dictionary of per-element losses, from the dense score matrix under autograd."""
    query = spec.similarity.prepare(embeddings)
    reference = query if ref_emb is None else spec.similarity.prepare(ref_emb)
    reference_labels = labels if ref_labels is None else ref_labels
    sim = spec.similarity.pairwise(query, reference)
    rows = torch.arange(embeddings.shape[0], device=embeddings.device)
    block = spec.pairs.block(labels, reference_labels, rows, 0, 0 if ref_emb is None else None, False)
    masks = (block.positive, block.negative)
    if spec.row_form:
        terms = []
        row_links = (spec.positive_link, spec.negative_link)
        for positive, mask, row_link in zip((True, False), masks, row_links, strict=True):
            assert isinstance(row_link, LogSumExp)
            a, c = spec.margin_affine(positive)
            z = sim * a + c
            if spec.weight.on == "margin":
                z = z * torch.as_tensor(spec.weight(sim.detach(), mask, positive), dtype=sim.dtype)
            terms.append(row_link.value(z, mask))
        loss = terms[0] + terms[1]
        if spec.combine is not None:
            loss = spec.combine.value(-loss)
        if spec.both_kinds:
            loss = torch.where(masks[0].any(dim=1) & masks[1].any(dim=1), loss, torch.zeros_like(loss))
        return {"loss": {"losses": loss, "indices": rows, "reduction_type": "element"}}
    out = {}
    given = spec.pairs.pairs if isinstance(spec.pairs, MinedPairs) else None
    for positive, name in ((True, "pos"), (False, "neg")):
        mask = masks[0] if positive else masks[1]
        if given is not None:
            anchors, others = (given[0], given[1]) if positive else (given[2], given[3])
        else:
            anchors, others = torch.nonzero(mask, as_tuple=True)
        a, c = spec.margin_affine(positive)
        z = sim[anchors, others] * a + c
        weight = spec.weight(sim.detach(), mask, positive)
        if isinstance(weight, Tensor):
            weight = weight[anchors, others]
        if spec.weight.on == "margin":
            z = z * weight
        pair_link = spec.positive_link if positive else spec.negative_link
        assert isinstance(pair_link, Link)
        value = pair_link.value(z)
        if spec.weight.on == "loss":
            value = value * weight
        out[f"{name}_loss"] = {"losses": value, "indices": (anchors, others), "reduction_type": f"{name}_pair"}
    return out


# ------------------------------------------------------------------------------------------------- modules


class ComposedPairLoss(EmbeddingLoss):
    """A pair loss assembled by :func:`pair_loss`: ``loss(embeddings, labels, indices_tuple=None, ref_emb=None,
    ref_labels=None)``, on the row-block engine."""

    family = "composed"

    def __init__(self, spec: PairLossSpec, block_size: int | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.block_size = block_size

    @property
    def formula(self) -> str:  # type: ignore[override]
        return self.spec.describe()

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        indices_tuple: tuple[Tensor, ...] | None = None,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Any:
        return evaluate_pairs(
            self.spec, embeddings, labels, indices_tuple, ref_emb, ref_labels, block_size=self.block_size
        )

    def extra_repr(self) -> str:
        return repr(self.spec)


class ComposedListLoss(PairLoss):
    """A ranking loss assembled by :func:`pair_loss` with :class:`~pairloss.pairs.RelevancePairs`:
    ``loss(scores, relevance, group_ids=None)`` over the pairs of each list, margin ``s_i − s_j``."""

    family = "composed"

    def __init__(self, pairs: RelevancePairs, link: Link, weight: ListWeight | Uniform, reducer: Reducer) -> None:
        super().__init__()
        self.pairs, self.link, self.weight, self.reducer = pairs, link, weight, reducer

    @property
    def formula(self) -> str:  # type: ignore[override]
        return f"{self.reducer!r} over list pairs of w·φ(s_i − s_j), φ = {self.link!r}"

    def forward(self, scores: Tensor, relevance: Tensor, group_ids: Tensor | None = None) -> Tensor:
        from pairloss.losses._lists import list_pair_loss, prepare_lists

        lists = prepare_lists(scores, relevance, group_ids)
        return list_pair_loss(lists, self.pairs, self.link, self.weight, self.reducer)


def pair_loss(
    link: Link | LogSumExp,
    *,
    negative_link: Link | LogSumExp | None = None,
    similarity: BaseSimilarity | None = None,
    pos_margin: float = 0.0,
    neg_margin: float = 0.0,
    weight: PairWeight | ListWeight | None = None,
    pairs: PairSelector | RelevancePairs | None = None,
    reducer: Reducer | str | None = None,
    combine: Link | None = None,
    pooled: bool = False,
    both_kinds: bool = False,
    generic_pair_rule: bool = False,
    block_size: int | None = None,
) -> ComposedPairLoss | ComposedListLoss:
    """Assemble a pairwise loss from the four parts; see the module notes for the two forms.

    Args:
        link: the link of the positive pairs (and of the negative ones unless ``negative_link`` is given): a
            :class:`~pairloss.links.Link` (pair form) or :class:`~pairloss.links.LogSumExp` (row form).
        negative_link: the link of the negative pairs.
        similarity: how embeddings are scored (default :class:`~pairloss.similarity.CosineSimilarity`).
        pos_margin, neg_margin: the margins ``m_pos`` and ``m_neg`` in the score's own units.
        weight: a :class:`~pairloss.weights.PairWeight` (default :class:`~pairloss.weights.Uniform`), or a list
            weight for relevance pairs.
        pairs: the pair selector (default :class:`~pairloss.pairs.LabelPairs`); a miner's ``indices_tuple`` given
            at call time replaces it. :class:`~pairloss.pairs.RelevancePairs` makes a ranking loss.
        reducer: a :class:`~pairloss.reducers.Reducer` or its short name (default ``"mean"``).
        combine: row form only: an outer link applied to ``−(ψ⁺ + ψ⁻)``.
        pooled: pair form only: reduce positive and negative pairs together instead of each on its own.
        both_kinds: row form only: an anchor without a positive or without a negative pair contributes nothing.
        generic_pair_rule: PML's ``GenericPairLoss`` rule: the loss is 0 when the batch has at most one positive
            and at most one negative pair.
        block_size: anchors per engine block (from the memory budget when ``None``).

    Returns:
        An ``nn.Module``: ``loss(embeddings, labels, indices_tuple=None, ref_emb=None, ref_labels=None)``, or
        ``loss(scores, relevance, group_ids=None)`` for relevance pairs.
    """
    chosen_reducer = get_reducer(reducer, MeanReducer)
    if isinstance(pairs, RelevancePairs):
        if not isinstance(link, Link) or (negative_link is not None and negative_link is not link):
            raise ValueError("a ranking loss takes one pair link (the margin is s_i − s_j)")
        if weight is not None and not isinstance(weight, ListWeight | Uniform):
            raise ValueError("relevance pairs take a list weight (e.g. weights.LambdaWeight) or uniform weights")
        return ComposedListLoss(pairs, link, weight if weight is not None else Uniform(), chosen_reducer)
    if weight is not None and not isinstance(weight, PairWeight):
        raise ValueError("embedding pairs take a pair weight (weights.Uniform, MultiSimilarity, Circle)")
    spec = PairLossSpec(
        positive_link=link,
        negative_link=link if negative_link is None else negative_link,
        similarity=similarity if similarity is not None else CosineSimilarity(),
        pos_margin=pos_margin,
        neg_margin=neg_margin,
        weight=weight if weight is not None else Uniform(),
        pairs=pairs if pairs is not None else LabelPairs(),
        reducer=chosen_reducer,
        combine=combine,
        pooled=pooled,
        both_kinds=both_kinds,
        generic_pair_rule=generic_pair_rule,
    )
    return ComposedPairLoss(spec, block_size)
