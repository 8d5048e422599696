"""Rank-based retrieval losses with a sigmoid rank surrogate: Recall@k surrogate (RS@k), Smooth-AP, and SiMix.

Both losses replace the rank of a positive ``x`` in the ranking of query ``q`` by a smooth count of the
items scored above it, ``rank(q, x) ≈ 1 + Σ_{z ∈ Ω_q, z ≠ x} σ((s_qz − s_qx) / τ)``. That inner sum is a
``positives × N`` tensor per query, so on top of the row-block engine (blocks of queries) the pairs
``(q, x)`` of a block are also processed in chunks whose ``[chunk, N]`` temporaries fit the memory budget
(:mod:`pairloss.memory`); the backward pass recomputes each chunk (:class:`_SigmoidRankSums`: the loss is a
nonlinear function of each rank sum, so the slopes of the sigmoids cannot be summed in the forward pass), and
memory stays ``O(block · N + chunk · N)`` whatever the batch size. For the same reason they are not built by
:func:`pairloss.pair_loss`, whose losses are sums of per-pair link values; the sigmoid is the public
:class:`pairloss.links.SigmoidRank`. The per-query losses are reduced by a reducer
of :mod:`pairloss.reducers` (the mean over the queries with a positive by default).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from pairloss import memory
from pairloss._validation import check_positive, checks_enabled
from pairloss.engine import PairBlock, dense_row_sums, row_block_sums
from pairloss.losses.base import EmbeddingLoss, check_pair_inputs, loss_module
from pairloss.pairs import reject_positional_reference
from pairloss.reducers import MeanReducer, Reducer, get_reducer
from pairloss.similarity import DotProductSimilarity

__all__ = [
    "RecallAtKSurrogateLoss",
    "SmoothAPLoss",
    "recall_at_k_surrogate_loss",
    "simix",
    "smooth_ap_loss",
]

IndicesTuple = tuple[Tensor, ...]

#: RS@k within this of its maximum, 1, has (numerically) no gradient left: a warning says so.
_SATURATED = 1e-6

#: How many ``[chunk, N]`` temporaries one chunk of (query, positive) pairs holds at once.
_CHUNK_COPIES = 3
#: Largest temporary of one chunk (a speed setting below the memory budget: small chunks stay in the CPU caches).
_CHUNK_TEMPORARY = 16 * 2**20 // _CHUNK_COPIES


def _chunk_size(n_pairs: int, n_columns: int, element_size: int) -> int:
    return memory.rows_per_block(n_pairs, n_columns * element_size, _CHUNK_COPIES, max_temporary=_CHUNK_TEMPORARY)


def _sigmoid_rows(sim: Tensor, r: Tensor, c: Tensor, tau: float) -> Tensor:
    """``σ((S[r_j, z] − S[r_j, c_j]) / τ)`` for a chunk of pairs, ``[chunk, M]``: the :class:`SigmoidRank` link
    ``σ(−m/τ)`` on the margins ``m = S[r_j, c_j] − S[r_j, z]`` (how far item z is below the positive), computed in
    place on one gathered copy."""
    return sim[r].sub_(sim[r, c][:, None]).div_(tau).sigmoid_()


class _SigmoidRankSums(torch.autograd.Function):
    """Smooth counts of the items above each pair ``j = (r_j, c_j)`` (query ``r_j``, positive ``c_j``): sums of
    the :class:`pairloss.links.SigmoidRank` link, whose derivative ``σ(1 − σ)/τ`` gives the backward.

    ``out[0, j] = Σ_{z ≠ self_j} σ((S[r_j, z] − S[r_j, c_j]) / τ)``, where ``self_j`` is the query's own
    column (``self_columns[r_j]``; nothing is left out when ``self_columns`` is ``None``), and, when ``positive``
    is given, ``out[1, j]`` is the same sum over the columns ``z`` with ``positive[r_j, z]``.

    Computed ``chunk`` pairs at a time; the backward recomputes the sigmoids chunk by chunk, so no ``[pairs, M]``
    tensor is ever stored. With ``σ'_jz = σ(1 − σ)/τ`` and ``w_jz = σ'_jz (g[0, j] 1[z ≠ self_j] + g[1, j]
    positive[r_j, z])``: ``∂/∂S[r_j, z] += w_jz`` and ``∂/∂S[r_j, c_j] −= Σ_z w_jz``.
    """

    @staticmethod
    def forward(
        ctx: Any,
        sim: Tensor,
        rows: Tensor,
        cols: Tensor,
        self_columns: Tensor | None,
        positive: Tensor | None,
        tau: float,
        chunk: int,
    ) -> Tensor:
        out = sim.new_empty(1 if positive is None else 2, rows.numel())
        for start in range(0, rows.numel(), chunk):
            r, c = rows[start : start + chunk], cols[start : start + chunk]
            sig = _sigmoid_rows(sim, r, c, tau)
            total = sig.sum(1)
            if self_columns is not None:
                total -= sig.gather(1, self_columns[r][:, None]).squeeze(1)
            out[0, start : start + chunk] = total
            if positive is not None:
                out[1, start : start + chunk] = sig.masked_fill_(~positive[r], 0).sum(1)
        ctx.save_for_backward(sim, rows, cols, self_columns, positive)
        ctx.tau, ctx.chunk = tau, chunk
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        sim, rows, cols, self_columns, positive = ctx.saved_tensors
        tau, chunk = ctx.tau, ctx.chunk
        grad = torch.zeros_like(sim)
        for start in range(0, rows.numel(), chunk):
            r, c = rows[start : start + chunk], cols[start : start + chunk]
            sig = _sigmoid_rows(sim, r, c, tau)
            w = sig.mul_(1 - sig)
            g = grad_out[:, start : start + chunk] / tau
            if positive is None:
                w.mul_(g[0][:, None])
            else:
                w.mul_(torch.where(positive[r], g[0][:, None] + g[1][:, None], g[0][:, None]))
            if self_columns is not None:
                w.scatter_(1, self_columns[r][:, None], 0)
            grad.index_put_((r,), w, accumulate=True)
            grad.index_put_((r, c), -w.sum(1), accumulate=True)
        return grad, None, None, None, None, None, None


def _self_columns(block: PairBlock) -> Tensor | None:
    """The column of each query in its own row (``None`` when the references are not the queries)."""
    return block.rows if block.self_pairs else None


def _no_positive(sim: Tensor) -> Tensor:
    """``[0, 0]``: the sums of a block without positive pair, attached to ``sim`` for the engine's backward."""
    return sim.new_zeros(2) + 0 * sim[:1, :1].sum()


def _check_temperature(value: float, name: str) -> float:
    return check_positive(float(value), name)


def simix(
    embeddings: Tensor,
    labels: Tensor,
    *,
    max_pairs_per_class: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """SiMix, similarity mixup (Patel, Tolias, Matas, CVPR 2022): virtual samples from same-class pairs.

    For every pair ``(a, b)`` of samples of the same class (``n(n−1)/2`` pairs for ``n`` samples of a
    class: 3, 6, 15 for 3, 4, 6 samples per class, as in the authors' code) draw ``α ~ U(0, 1)`` and form
    ``v = α x_a + (1 − α) x_b`` from the (already L2-normalised) embeddings, *without* re-normalising.
    Then for any sample ``q``

        s(q, v) = q·v = α s(q, a) + (1 − α) s(q, b),

    so the virtual samples are exactly similarity mixes: they cost ``O(M·D)`` to form and ``O(N·M)`` extra
    similarities in the engine's matrix product, and they never go through the network. The virtual samples
    carry the label of their class and act both as queries and as positives/negatives of the others.

    Args:
        embeddings: ``[N, D]`` normalised embeddings.
        labels: ``[N]`` class ids.
        max_pairs_per_class: mix at most this many randomly chosen pairs per class (all pairs when ``None``).
        generator: random source for the pairs and the ``α`` (defaults to the global one).

    Returns:
        ``(virtual [M, D], virtual_labels [M])``.
    """
    embeddings, labels, _, _ = check_pair_inputs(embeddings, labels)
    if labels.ndim != 1:
        raise ValueError("simix needs 1-D class ids")
    if max_pairs_per_class is not None and max_pairs_per_class < 1:
        raise ValueError(f"max_pairs_per_class must be >= 1, got {max_pairs_per_class}")
    first: list[Tensor] = []
    second: list[Tensor] = []
    for cls in torch.unique(labels):
        members = torch.nonzero(labels == cls).flatten()
        if members.numel() < 2:
            continue
        a, b = torch.triu_indices(members.numel(), members.numel(), offset=1, device=labels.device)
        if max_pairs_per_class is not None and a.numel() > max_pairs_per_class:
            keep = torch.randperm(a.numel(), generator=generator)[:max_pairs_per_class].to(a.device)
            a, b = a[keep], b[keep]
        first.append(members[a])
        second.append(members[b])
    if not first:
        return embeddings.new_zeros(0, embeddings.shape[1]), labels.new_zeros(0)
    ia, ib = torch.cat(first), torch.cat(second)
    alpha = torch.rand(ia.numel(), 1, generator=generator, dtype=embeddings.dtype).to(embeddings.device)
    return alpha * embeddings[ia] + (1 - alpha) * embeddings[ib], labels[ia]


def _with_simix(
    embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None, use_simix: bool, max_pairs_per_class: int | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The batch as the engine sees it: normalised queries (plus SiMix's virtual samples when asked) and the
    normalised references, if any."""
    if use_simix and ref_emb is not None:
        raise ValueError("use_simix mixes the batch with itself and cannot be combined with ref_emb")
    normalised = F.normalize(embeddings, p=2, dim=1)
    reference = None if ref_emb is None else F.normalize(ref_emb, p=2, dim=1)
    if not use_simix:
        return normalised, labels, reference
    virtual, virtual_labels = simix(normalised, labels, max_pairs_per_class=max_pairs_per_class)
    return torch.cat([normalised, virtual]), torch.cat([labels, virtual_labels]), reference


def _reduced_over_queries(
    per_query: Callable[[PairBlock], tuple[Tensor, Tensor] | None],
    reducer: Reducer,
    query: Tensor,
    query_labels: Tensor,
    reference: Tensor | None,
    ref_labels: Tensor | None,
    block_size: int | None,
) -> Tensor:
    """Run ``per_query`` (each block's per-query losses and the queries that have a positive, ``None`` for a block
    without positives) on the engine and reduce the losses of the queries with a positive."""

    def row(block: PairBlock) -> Tensor:
        result = per_query(block)
        if result is None:
            return _no_positive(block.sim)
        losses, has = result
        kept = has & reducer.keep(losses) if reducer.filters else has
        return torch.stack([torch.where(kept, losses, 0).sum(), kept.sum().to(losses.dtype)])

    if torch.compiler.is_compiling():
        # the engine's backward replays blocks with torch.autograd.grad, which a compiled graph cannot hold: the
        # whole [N, M] matrix under plain autograd instead (static shapes; see _static_ranks_above)
        sums = dense_row_sums(row, query, query_labels, reference, ref_labels, similarity=DotProductSimilarity())
    else:
        sums = row_block_sums(
            row,
            query,
            query_labels,
            reference,
            ref_labels,
            similarity=DotProductSimilarity(),
            block_size=block_size,
            working_copies=4,
        )
    return reducer.finish(sums[0], sums[1])


def _static_ranks_above(sim: Tensor, self_columns: Tensor | None, tau: float) -> Tensor:
    """``[b, M]``: ``Σ_{z ≠ self} σ((S[i, z] − S[i, x]) / τ)`` for every column ``x`` of every row ``i``, under
    plain autograd and with shapes that do not depend on the data (the form :func:`torch.compile` traces; the
    eager path gathers the positive pairs instead). Chunks of columns keep each ``[b, chunk, M]`` temporary near
    the chunk size of the eager path, so the work is ``b · M²``, not ``b · M · |P|``."""
    b, m = sim.shape
    chunk = max(1, _CHUNK_TEMPORARY // max(1, b * m * sim.element_size()))
    parts = []
    for start in range(0, m, chunk):
        candidates = sim[:, start : start + chunk]
        sig = torch.sigmoid((sim[:, None, :] - candidates[:, :, None]) / tau)
        total = sig.sum(2)
        if self_columns is not None:
            own = self_columns[:, None, None].expand(b, candidates.shape[1], 1)
            total = total - sig.gather(2, own).squeeze(2)
        parts.append(total)
    return torch.cat(parts, dim=1)


def _no_mined_pairs(name: str, indices_tuple: IndicesTuple | None) -> None:
    reject_positional_reference(indices_tuple)
    if indices_tuple is not None:
        raise ValueError(f"{name} ranks each positive among all references; it does not take an indices_tuple")


def recall_at_k_surrogate_loss(
    embeddings: Tensor,
    labels: Tensor,
    indices_tuple: IndicesTuple | None = None,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    k: Sequence[int] = (1, 2, 4, 8, 16),
    tau1: float = 1.0,
    tau2: float = 0.01,
    code_variant: bool = False,
    use_simix: bool = False,
    simix_max_pairs_per_class: int | None = None,
    reducer: Reducer | str = MeanReducer(),
    block_size: int | None = None,
) -> Tensor:
    """Recall@k surrogate loss, RS@k (Patel, Tolias, Matas, "Recall@k Surrogate Loss with Large Batches and
    Similarity Mixup", CVPR 2022).

    On cosine similarities ``s``, for query ``q`` with positives ``P_q`` and the other batch items ``Ω_q``:

        rank(q, x) = 1 + Σ_{z ∈ Ω_q, z ≠ x} σ((s_qz − s_qx) / τ2)
        R̃@k(q)    = Σ_{x ∈ P_q} σ((k − rank(q, x)) / τ1) / min(k, |P_q|)
        L          = mean over queries with |P_q| > 0 and over k ∈ K of (1 − R̃@k(q))

    A query without positive contributes nothing (and a batch without any positive gives 0).

    ``code_variant=True`` follows the authors' public code (RecallatK_surrogate, ``src/losses.py``) instead
    of the paper in its two details: the rank sum also counts the query itself (``Ω_q`` includes ``q``, so
    every rank is about one higher; OML's ``SurrogatePrecision`` compensates with ``k + 1``), and the
    numerator is clamped at ``k``. With a separate reference set the query is not among the references and
    only the clamp differs.

    Args:
        k: the cut-offs ``K`` averaged in the loss.
        tau1: temperature of the sigmoid on ``k − rank``.
        tau2: temperature of the sigmoid rank (smaller = closer to the true rank, sparser gradients).
        code_variant: use the authors' code's definition (see above).
        use_simix: add SiMix virtual samples (:func:`simix`) to the batch before computing the loss.
        simix_max_pairs_per_class: cap on mixed pairs per class (all same-class pairs when ``None``).
        reducer: how the per-query losses are reduced (:mod:`pairloss.reducers`).
        block_size: queries per engine block (automatic when ``None``).

    Cost ``O(N · |P| · N)`` time, ``O(block · N + chunk · N)`` memory.
    """
    _no_mined_pairs("recall_at_k_surrogate_loss", indices_tuple)
    embeddings, labels, ref_emb, ref_labels = check_pair_inputs(embeddings, labels, ref_emb, ref_labels)
    ks = [int(v) for v in k]
    if not ks or min(ks) < 1:
        raise ValueError(f"k must be a non-empty sequence of integers >= 1, got {list(k)}")
    _check_temperature(tau1, "tau1")
    _check_temperature(tau2, "tau2")
    query, query_labels, reference = _with_simix(embeddings, labels, ref_emb, use_simix, simix_max_pairs_per_class)

    def per_query(block: PairBlock) -> tuple[Tensor, Tensor] | None:
        sim = block.sim
        if torch.compiler.is_compiling():
            return static_per_query(block)
        rows, cols = torch.nonzero(block.positive, as_tuple=True)
        if rows.numel() == 0:
            return None
        self_columns = None if code_variant else _self_columns(block)
        chunk = _chunk_size(rows.numel(), sim.shape[1], sim.element_size())
        above = _SigmoidRankSums.apply(sim, rows, cols, self_columns, None, tau2, chunk)[0]
        rank = 0.5 + above  # 1 + Σ_{z ≠ x}: the term z = x is σ(0) = 1/2 and has zero gradient
        cutoffs = torch.tensor(ks, dtype=sim.dtype, device=sim.device)
        soft = torch.sigmoid((cutoffs[None, :] - rank[:, None]) / tau1)
        numerator = sim.new_zeros(sim.shape[0], len(ks)).index_put_((rows,), soft, accumulate=True)
        if code_variant:
            numerator = torch.minimum(numerator, cutoffs[None, :])
        n_pos = block.positive.sum(1).to(sim.dtype)
        has = n_pos > 0
        denominator = torch.minimum(cutoffs[None, :], n_pos[:, None]).clamp_min(1)
        return (1 - numerator / denominator).mean(1), has

    def static_per_query(block: PairBlock) -> tuple[Tensor, Tensor]:
        """The same losses with every column as a candidate positive (static shapes, for torch.compile)."""
        sim = block.sim
        self_columns = None if code_variant else _self_columns(block)
        rank = 0.5 + _static_ranks_above(sim, self_columns, tau2)
        cutoffs = torch.tensor(ks, dtype=sim.dtype, device=sim.device)
        soft = torch.sigmoid((cutoffs[None, None, :] - rank[:, :, None]) / tau1)
        numerator = torch.where(block.positive[:, :, None], soft, 0.0).sum(1)
        if code_variant:
            numerator = torch.minimum(numerator, cutoffs[None, :])
        n_pos = block.positive.sum(1).to(sim.dtype)
        denominator = torch.minimum(cutoffs[None, :], n_pos[:, None]).clamp_min(1)
        return (1 - numerator / denominator).mean(1), n_pos > 0

    chosen = get_reducer(reducer, MeanReducer)
    loss = _reduced_over_queries(per_query, chosen, query, query_labels, reference, ref_labels, block_size)
    if isinstance(chosen, MeanReducer) and checks_enabled() and bool(loss.detach() >= 1 - _SATURATED):
        warnings.warn(
            f"RS@k is saturated (loss {float(loss.detach()):.6f}): every positive's smooth rank is so far above "
            f"max(k) = {max(ks)} that σ((k − rank)/tau1) vanishes, and so does the gradient. Typical of an untrained "
            "network whose similarities are all alike, worse with larger batches (the rank grows with the "
            "batch); start from a network trained with another loss, or raise tau1 or tau2.",
            RuntimeWarning,
            stacklevel=2,
        )
    return loss


def smooth_ap_loss(
    embeddings: Tensor,
    labels: Tensor,
    indices_tuple: IndicesTuple | None = None,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    tau: float = 0.01,
    use_simix: bool = False,
    simix_max_pairs_per_class: int | None = None,
    reducer: Reducer | str = MeanReducer(),
    block_size: int | None = None,
) -> Tensor:
    """Smooth-AP (Brown, Xie, Kalogeiton, Zisserman, "Smooth-AP: Smoothing the Path Towards Large-Scale Image
    Retrieval", ECCV 2020).

    On cosine similarities, with the same sigmoid rank as RS@k computed over the positives and over all items:

        AP̃(q) = (1/|P_q|) Σ_{x ∈ P_q} (1 + Σ_{z ∈ P_q, z ≠ x} σ((s_qz − s_qx)/τ))
                                       / (1 + Σ_{z ∈ Ω_q, z ≠ x} σ((s_qz − s_qx)/τ))
        L     = mean over queries with |P_q| > 0 of (1 − AP̃(q))

    ``τ = 0.01`` is the paper's default. A query without positive contributes nothing.
    """
    _no_mined_pairs("smooth_ap_loss", indices_tuple)
    embeddings, labels, ref_emb, ref_labels = check_pair_inputs(embeddings, labels, ref_emb, ref_labels)
    _check_temperature(tau, "tau")
    query, query_labels, reference = _with_simix(embeddings, labels, ref_emb, use_simix, simix_max_pairs_per_class)

    def per_query(block: PairBlock) -> tuple[Tensor, Tensor] | None:
        sim = block.sim
        rows, cols = torch.nonzero(block.positive, as_tuple=True)
        if rows.numel() == 0:
            return None
        chunk = _chunk_size(rows.numel(), sim.shape[1], sim.element_size())
        above_all, above_pos = _SigmoidRankSums.apply(sim, rows, cols, _self_columns(block), block.positive, tau, chunk)
        ratio = (0.5 + above_pos) / (0.5 + above_all)  # both sums include z = x, whose σ(0) = 1/2
        n_pos = block.positive.sum(1).to(sim.dtype)
        has = n_pos > 0
        ap = sim.new_zeros(sim.shape[0]).index_put_((rows,), ratio, accumulate=True) / n_pos.clamp_min(1)
        return 1 - ap, has

    chosen = get_reducer(reducer, MeanReducer)
    return _reduced_over_queries(per_query, chosen, query, query_labels, reference, ref_labels, block_size)


@loss_module(
    recall_at_k_surrogate_loss,
    formula="mean_{q,k} 1 − Σ_{x∈P_q} σ((k − 1 − Σ_{z≠x} σ((s_qz − s_qx)/τ2))/τ1) / min(k, |P_q|)",
    paper="Patel, Tolias, Matas. Recall@k Surrogate Loss with Large Batches and Similarity Mixup. CVPR 2022",
    family="recall",
)
class RecallAtKSurrogateLoss(EmbeddingLoss):
    """Recall@k surrogate (RS@k): one minus a smooth Recall@k averaged over ``k ∈ K``, optionally with SiMix.

    See :func:`recall_at_k_surrogate_loss` for the formula, the code variant and the arguments.
    """


@loss_module(
    smooth_ap_loss,
    formula="mean_q 1 − (1/|P_q|) Σ_{x∈P_q} (1 + Σ_{z∈P_q,z≠x} σ(Δ/τ)) / (1 + Σ_{z∈Ω_q,z≠x} σ(Δ/τ))",
    paper="Brown, Xie, Kalogeiton, Zisserman. Smooth-AP: Smoothing the Path Towards Large-Scale Image Retrieval. "
    "ECCV 2020",
    family="recall",
)
class SmoothAPLoss(EmbeddingLoss):
    """Smooth-AP: one minus a smooth average precision with sigmoid ranks. See :func:`smooth_ap_loss`."""
