"""Pairwise similarities and distances: the second of the four parts of a pairwise loss.

Each object turns two sets of vectors into a matrix of scores ``S[i, j] = s(q_i, r_j)``. The work is split in two
steps so that the row-block engine can recompute blocks cheaply:

* :meth:`BaseSimilarity.prepare` maps each embedding on its own (e.g. L2 normalisation), O(N·D), outside the engine;
* :meth:`BaseSimilarity.pairwise` scores a block of prepared queries against all prepared references, O(b·M·D).

For the engine's gradient without an autograd graph, each similarity also adds the vector-Jacobian product of a
weighted sum of scores into gradient buffers: :meth:`BaseSimilarity.add_pairwise_vjp`, for a dense ``[b, M]`` block of
weights or a sparse :class:`SparsePairWeights` (two in-place matmuls for the built-in scores). The default
differentiates :meth:`~BaseSimilarity.pairwise` with autograd, so a new similarity only has to define its scores.

``is_inverted`` follows pytorch-metric-learning: ``True`` for similarities (larger = closer), ``False`` for
distances (smaller = closer). Class names and constructor arguments mirror PML's ``distances`` module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from pairloss._sparse_pairs import SparsePairWeights

__all__ = [
    "BaseSimilarity",
    "CosineSimilarity",
    "DotProductSimilarity",
    "LpDistance",
    "NegSquaredEuclideanSimilarity",
    "SparsePairWeights",
]


#: ``(start, stop, offset, out) -> [stop − start, M − offset]`` scores (see :meth:`BaseSimilarity.block_scorer`).
BlockScorer = Callable[[int, int, int, "Tensor | None"], Tensor]


class BaseSimilarity(ABC):
    """A pairwise score between embeddings: ``prepare`` each vector, then ``pairwise`` on blocks."""

    is_inverted: bool = True

    def __init__(self, normalize_embeddings: bool = True) -> None:
        self.normalize_embeddings = normalize_embeddings

    def prepare(self, embeddings: Tensor) -> Tensor:
        """Per-vector transform applied once before any pair is scored (L2 normalisation by default)."""
        if self.normalize_embeddings:
            return F.normalize(embeddings, p=2, dim=1)
        return embeddings

    @abstractmethod
    def pairwise(self, query: Tensor, reference: Tensor) -> Tensor:
        """Scores ``[b, M]`` between prepared ``query [b, D]`` and prepared ``reference [M, D]``."""

    def add_pairwise_vjp(
        self,
        query: Tensor,
        reference: Tensor,
        sim: Tensor,
        weight: Tensor | SparsePairWeights,
        grad_query: Tensor,
        grad_reference: Tensor,
        alpha: float = 1.0,
    ) -> None:
        """Add ``alpha ×`` the gradients of ``Σ_ij weight_ij · s(q_i, r_j)`` w.r.t. ``query [b, D]`` and
        ``reference [M, D]`` to ``grad_query`` and ``grad_reference``, in place.

        ``sim`` is ``pairwise(query, reference)``, already computed by the caller (the analytic overrides reuse it);
        ``weight`` is a dense ``[b, M]`` tensor or, for mostly-zero weights, a :class:`SparsePairWeights`. This
        default differentiates :meth:`pairwise` again with autograd; the built-in scores override it with matmuls
        that write into the buffers (no ``[M, D]`` temporary per block).
        """
        if isinstance(weight, SparsePairWeights):
            weight = weight.to_dense()
        with torch.enable_grad():
            q = query.detach().requires_grad_(True)
            r = reference.detach().requires_grad_(True)
            dq, dr = torch.autograd.grad(self.pairwise(q, r), (q, r), weight)
        grad_query.add_(dq, alpha=alpha)
        grad_reference.add_(dr, alpha=alpha)

    def block_scorer(self, query: Tensor, reference: Tensor) -> BlockScorer:
        """A function ``(start, stop, offset, out) -> scores`` of ``query[start:stop]`` against
        ``reference[offset:]`` (prepared), for the engine's passes without autograd: it may write into ``out`` (a
        ``[stop − start, M − offset]`` buffer reused from block to block, or ``None``) and do per-vector work
        (norms) once for all blocks. The default calls :meth:`pairwise`."""

        def score(start: int, stop: int, offset: int, out: Tensor | None) -> Tensor:
            return self.pairwise(query[start:stop], reference[offset:])

        return score

    def add_stacked_pairwise_vjp(
        self,
        query: Tensor,
        reference: Tensor,
        sim: Tensor,
        weight: Tensor,
        grad_query: Tensor,
        grad_reference: Tensor,
        alpha: float = 1.0,
    ) -> None:
        """:meth:`add_pairwise_vjp` for ``K`` weight matrices at once: ``weight [K, b, M]`` (may be overwritten),
        ``grad_query [K, b, D]`` and ``grad_reference [K, M, D]``. The built-in scores do all ``K`` in one batched
        matrix product per direction; this default does one weight after the other."""
        for k in range(weight.shape[0]):
            dq, dr = torch.zeros_like(grad_query[k]), torch.zeros_like(grad_reference[k])
            self.add_pairwise_vjp(query, reference, sim, weight[k], dq, dr, alpha)
            grad_query[k].add_(dq)
            grad_reference[k].add_(dr)

    def paired(self, query: Tensor, reference: Tensor) -> Tensor:
        """Scores ``[n]`` of the rows ``(query[k], reference[k])`` (prepared), differentiable: the scores of a list
        of pairs without the ``n × n`` matrix. The default scores one row at a time; the built-in scores override it.
        """
        if query.shape[0] == 0:
            return query.new_zeros(0)
        return torch.cat([self.pairwise(q[None], r[None])[0] for q, r in zip(query, reference, strict=True)])

    def __call__(self, query: Tensor, reference: Tensor | None = None) -> Tensor:
        """The full matrix ``[N, M]`` (``reference`` defaults to ``query``). Dense: for small inputs and tests."""
        q = self.prepare(query)
        r = q if reference is None else self.prepare(reference)
        return self.pairwise(q, r)

    def margin(self, x: Tensor | float, y: Tensor | float) -> Tensor:
        """How far ``x`` is beyond ``y`` on the "farther" side: ``x − y`` for distances, ``y − x`` for similarities.

        The same convention as PML's ``BaseDistance.margin``: ``relu(margin(d_pos, m))`` penalises a positive pair
        farther than ``m`` whatever the direction of the score.
        """
        difference = y - x if self.is_inverted else x - y
        return torch.as_tensor(difference)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(normalize_embeddings={self.normalize_embeddings})"


class _InnerProduct(BaseSimilarity):
    """``s(q, r) = q·r`` on the prepared embeddings: the gradient of ``Σ W_ij s_ij`` is ``(W R, Wᵀ Q)``."""

    def pairwise(self, query: Tensor, reference: Tensor) -> Tensor:
        return query @ reference.T

    def block_scorer(self, query: Tensor, reference: Tensor) -> BlockScorer:
        def score(start: int, stop: int, offset: int, out: Tensor | None) -> Tensor:
            return torch.mm(query[start:stop], reference[offset:].T, out=out)

        return score

    def paired(self, query: Tensor, reference: Tensor) -> Tensor:
        return (query * reference).sum(dim=1)

    def add_pairwise_vjp(
        self,
        query: Tensor,
        reference: Tensor,
        sim: Tensor,
        weight: Tensor | SparsePairWeights,
        grad_query: Tensor,
        grad_reference: Tensor,
        alpha: float = 1.0,
    ) -> None:
        _add_product(grad_query, weight, reference, alpha)
        _add_product(grad_reference, weight.T, query, alpha)

    def add_stacked_pairwise_vjp(
        self,
        query: Tensor,
        reference: Tensor,
        sim: Tensor,
        weight: Tensor,
        grad_query: Tensor,
        grad_reference: Tensor,
        alpha: float = 1.0,
    ) -> None:
        _add_stacked_products(query, reference, weight, grad_query, grad_reference, alpha)


class CosineSimilarity(_InnerProduct):
    """``s(q, r) = q·r / (‖q‖‖r‖)``: the dot product of L2-normalised embeddings (PML's ``CosineSimilarity``)."""

    is_inverted = True

    def __init__(self) -> None:
        super().__init__(normalize_embeddings=True)

    def __repr__(self) -> str:
        return "CosineSimilarity()"


class DotProductSimilarity(_InnerProduct):
    """``s(q, r) = q·r`` on raw embeddings by default (PML's ``DotProductSimilarity``)."""

    is_inverted = True

    def __init__(self, normalize_embeddings: bool = False) -> None:
        super().__init__(normalize_embeddings=normalize_embeddings)


class NegSquaredEuclideanSimilarity(BaseSimilarity):
    """``s(q, r) = −‖q − r‖²`` computed as ``2 q·r − ‖q‖² − ‖r‖²`` (one matmul, no ``[b, M, D]`` tensor)."""

    is_inverted = True

    def __init__(self, normalize_embeddings: bool = False) -> None:
        super().__init__(normalize_embeddings=normalize_embeddings)

    def pairwise(self, query: Tensor, reference: Tensor) -> Tensor:
        return _squared_euclidean(query, reference, clamp=False).neg_()

    def block_scorer(self, query: Tensor, reference: Tensor) -> BlockScorer:
        squared = _squared_euclidean_scorer(query, reference, clamp=False)

        def score(start: int, stop: int, offset: int, out: Tensor | None) -> Tensor:
            return squared(start, stop, offset, out).neg_()

        return score

    def paired(self, query: Tensor, reference: Tensor) -> Tensor:
        return -(query - reference).square().sum(dim=1)

    def add_pairwise_vjp(
        self,
        query: Tensor,
        reference: Tensor,
        sim: Tensor,
        weight: Tensor | SparsePairWeights,
        grad_query: Tensor,
        grad_reference: Tensor,
        alpha: float = 1.0,
    ) -> None:
        # ∂(−‖q_i − r_j‖²)/∂q_i = −2 (q_i − r_j)
        _add_difference_vjp(query, reference, weight, grad_query, grad_reference, -2.0 * alpha)

    def add_stacked_pairwise_vjp(
        self,
        query: Tensor,
        reference: Tensor,
        sim: Tensor,
        weight: Tensor,
        grad_query: Tensor,
        grad_reference: Tensor,
        alpha: float = 1.0,
    ) -> None:
        _add_stacked_difference_vjp(query, reference, weight, grad_query, grad_reference, -2.0 * alpha)


class LpDistance(BaseSimilarity):
    """``d(q, r) = ‖q − r‖_p ** power`` on L2-normalised embeddings by default (PML's ``LpDistance``).

    Computed by ``torch.cdist`` on the block under autograd (one matmul and a fused backward for ``p = 2``, a zero
    gradient at zero distance) and, for ``p = 2`` without autograd (the engine's passes), as the root of
    ``‖q‖² + ‖r‖² − 2 q·r`` clamped at 0; ``power = 2`` with ``p = 2`` skips the root.
    """

    is_inverted = False

    def __init__(self, normalize_embeddings: bool = True, p: float = 2, power: float = 1) -> None:
        super().__init__(normalize_embeddings=normalize_embeddings)
        if p <= 0:
            raise ValueError(f"p must be > 0, got {p}")
        self.p = p
        self.power = power

    def pairwise(self, query: Tensor, reference: Tensor) -> Tensor:
        if self.p == 2 and self.power == 2:
            return _squared_euclidean(query, reference, clamp=True)
        recording = torch.is_grad_enabled() and (query.requires_grad or reference.requires_grad)
        if self.p == 2 and self.power == 1 and not recording:
            return _squared_euclidean(query, reference, clamp=True).sqrt_()
        if query.dtype in (torch.float16, torch.bfloat16):  # torch.cdist has no half-precision kernel on CPU
            distance = torch.cdist(query.float(), reference.float(), p=self.p).to(query.dtype)
        else:
            distance = torch.cdist(query, reference, p=self.p)
        return distance if self.power == 1 else distance**self.power

    def block_scorer(self, query: Tensor, reference: Tensor) -> BlockScorer:
        if self.p != 2 or self.power not in (1, 2):
            return super().block_scorer(query, reference)
        squared = _squared_euclidean_scorer(query, reference, clamp=True)
        if self.power == 2:
            return squared

        def score(start: int, stop: int, offset: int, out: Tensor | None) -> Tensor:
            return squared(start, stop, offset, out).sqrt_()

        return score

    def paired(self, query: Tensor, reference: Tensor) -> Tensor:
        distance = torch.linalg.vector_norm(query - reference, ord=self.p, dim=1)
        return distance if self.power == 1 else distance**self.power

    def add_pairwise_vjp(
        self,
        query: Tensor,
        reference: Tensor,
        sim: Tensor,
        weight: Tensor | SparsePairWeights,
        grad_query: Tensor,
        grad_reference: Tensor,
        alpha: float = 1.0,
    ) -> None:
        if self.p != 2 or self.power not in (1, 2):
            super().add_pairwise_vjp(query, reference, sim, weight, grad_query, grad_reference, alpha)
            return
        # ∂‖q_i − r_j‖/∂q_i = (q_i − r_j) / d_ij (0 at d = 0, as torch.cdist); ∂‖q_i − r_j‖²/∂q_i = 2 (q_i − r_j).
        if isinstance(weight, SparsePairWeights):
            d = sim[weight.rows, weight.columns]
            values = torch.where(d > 0, weight.values, 0.0)
            if self.power == 1:
                values = values / d.clamp_min(torch.finfo(d.dtype).tiny)
            weight = weight.with_values(values)
        else:
            weight = torch.where(sim > 0, weight, 0.0)
            if self.power == 1:
                weight = weight.div_(sim.clamp_min(torch.finfo(sim.dtype).tiny))
        scale = 2.0 if self.power == 2 else 1.0
        _add_difference_vjp(query, reference, weight, grad_query, grad_reference, scale * alpha)

    def add_stacked_pairwise_vjp(
        self,
        query: Tensor,
        reference: Tensor,
        sim: Tensor,
        weight: Tensor,
        grad_query: Tensor,
        grad_reference: Tensor,
        alpha: float = 1.0,
    ) -> None:
        if self.p != 2 or self.power not in (1, 2):
            super().add_stacked_pairwise_vjp(query, reference, sim, weight, grad_query, grad_reference, alpha)
            return
        if self.power == 1:  # ∂d/∂q = (q − r)/d, 0 at d = 0 (where w/d is nan or inf)
            weight.div_(sim).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        else:
            weight.mul_(sim > 0)
        scale = 2.0 if self.power == 2 else 1.0
        _add_stacked_difference_vjp(query, reference, weight, grad_query, grad_reference, scale * alpha)

    def __repr__(self) -> str:
        return f"LpDistance(normalize_embeddings={self.normalize_embeddings}, p={self.p}, power={self.power})"


def _squared_euclidean(query: Tensor, reference: Tensor, clamp: bool) -> Tensor:
    """``‖q‖² + ‖r‖² − 2 q·r`` (clamped at 0 if asked): one matmul. Without autograd it fills a single ``[b, M]``
    buffer in place and makes no ``[M, D]`` temporary — a per-block copy of the references (as ``torch.cdist``
    makes) costs a page fault per 4 KiB once it is larger than the allocator keeps around."""
    if torch.is_grad_enabled() and (query.requires_grad or reference.requires_grad):
        squared = (query * query).sum(1, keepdim=True) + (reference * reference).sum(1) - 2 * (query @ reference.T)
        return squared.clamp_min(0) if clamp else squared
    query_norms = torch.linalg.vector_norm(query, dim=1).square_()
    reference_norms = torch.linalg.vector_norm(reference, dim=1).square_()
    squared = torch.addmm(reference_norms[None, :], query, reference.T, alpha=-2).add_(query_norms[:, None])
    return squared.clamp_min_(0) if clamp else squared


def _squared_euclidean_scorer(query: Tensor, reference: Tensor, clamp: bool) -> BlockScorer:
    """The block scorer of ``‖q − r‖²`` (clamped at 0 if asked): the squared norms once, then one ``addmm`` and
    one addition per block, written into the block's buffer."""
    query_norms = torch.linalg.vector_norm(query, dim=1).square_()
    reference_norms = torch.linalg.vector_norm(reference, dim=1).square_()

    def score(start: int, stop: int, offset: int, out: Tensor | None) -> Tensor:
        squared = torch.addmm(
            reference_norms[None, offset:], query[start:stop], reference[offset:].T, alpha=-2, out=out
        ).add_(query_norms[start:stop, None])
        return squared.clamp_min_(0) if clamp else squared

    return score


def _add_product(out: Tensor, weight: Tensor | SparsePairWeights, dense: Tensor, alpha: float) -> None:
    """``out += alpha · weight @ dense`` in place."""
    if isinstance(weight, SparsePairWeights):
        weight.add_product_to(out, dense, alpha)
    else:
        out.addmm_(weight, dense, alpha=alpha)


def _add_difference_vjp(
    query: Tensor,
    reference: Tensor,
    weight: Tensor | SparsePairWeights,
    grad_query: Tensor,
    grad_reference: Tensor,
    scale: float,
) -> None:
    """Add the gradients of ``Σ_ij V_ij · f(q_i − r_j)`` when ``∂f/∂q_i = scale · (q_i − r_j)`` (``V = weight``):
    ``scale · (q_i Σ_j V_ij − (V R)_i)`` and ``scale · (r_j Σ_i V_ij − (Vᵀ Q)_j)``."""
    grad_query.addcmul_(query, weight.sum(1, keepdim=True), value=scale)
    _add_product(grad_query, weight, reference, -scale)
    grad_reference.addcmul_(reference, weight.sum(0)[:, None], value=scale)
    _add_product(grad_reference, weight.T, query, -scale)


def _add_stacked_products(
    query: Tensor, reference: Tensor, weight: Tensor, grad_query: Tensor, grad_reference: Tensor, alpha: float
) -> None:
    """``grad_query[k] += alpha · W_k R`` and ``grad_reference[k] += alpha · W_kᵀ Q`` for ``weight [K, b, M]``, in
    place."""
    # one addmm per weight rather than a baddbmm: the latter copies the transposed weights and non-contiguous
    # outputs (measured: a third of the contrastive loss's time at N = 8192), addmm passes them to BLAS as they are
    for k in range(weight.shape[0]):
        grad_query[k].addmm_(weight[k], reference, alpha=alpha)
        grad_reference[k].addmm_(weight[k].T, query, alpha=alpha)


def _add_stacked_difference_vjp(
    query: Tensor, reference: Tensor, weight: Tensor, grad_query: Tensor, grad_reference: Tensor, scale: float
) -> None:
    """:func:`_add_difference_vjp` for ``K`` stacked weights (the layout of :func:`_add_stacked_products`)."""
    grad_query.addcmul_(query, weight.sum(2, keepdim=True), value=scale)
    grad_reference.addcmul_(reference, weight.sum(1)[:, :, None], value=scale)
    _add_stacked_products(query, reference, weight, grad_query, grad_reference, -scale)
