"""Pairwise similarities and distances: the second of the four parts of a pairwise loss.

Each object turns two sets of vectors into a matrix of scores ``S[i, j] = s(q_i, r_j)``. The work is split in two
steps so that the row-block engine can recompute blocks cheaply:

* :meth:`BaseSimilarity.prepare` maps each embedding on its own (e.g. L2 normalisation), O(N·D), outside the engine;
* :meth:`BaseSimilarity.pairwise` scores a block of prepared queries against all prepared references, O(b·M·D).

For the engine's gradient without an autograd graph, each similarity also gives the vector-Jacobian product of a
weighted sum of scores: :meth:`BaseSimilarity.pairwise_vjp` for a dense ``[b, M]`` block of weights (two matmuls for
the built-in scores) and :meth:`BaseSimilarity.paired_vjp` for a sparse list of pairs. The defaults differentiate
:meth:`~BaseSimilarity.pairwise` / :meth:`~BaseSimilarity.paired` with autograd, so a new similarity only has to
define its scores.

``is_inverted`` follows pytorch-metric-learning: ``True`` for similarities (larger = closer), ``False`` for
distances (smaller = closer). Class names and constructor arguments mirror PML's ``distances`` module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

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

    def pairwise_vjp(
        self, query: Tensor, reference: Tensor, sim: Tensor, weight: Tensor | SparsePairWeights
    ) -> tuple[Tensor, Tensor]:
        """Gradients of ``Σ_ij weight_ij · s(q_i, r_j)`` w.r.t. ``query [b, D]`` and ``reference [M, D]``.

        ``sim`` is ``pairwise(query, reference)``, already computed by the caller (the analytic overrides reuse it);
        ``weight`` is a dense ``[b, M]`` tensor or, for mostly-zero weights, a :class:`SparsePairWeights`. This
        default differentiates :meth:`pairwise` again with autograd.
        """
        if isinstance(weight, SparsePairWeights):
            weight = weight.to_dense()
        with torch.enable_grad():
            q = query.detach().requires_grad_(True)
            r = reference.detach().requires_grad_(True)
            grad_q, grad_r = torch.autograd.grad(self.pairwise(q, r), (q, r), weight)
        return grad_q, grad_r

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

    def pairwise_vjp(
        self, query: Tensor, reference: Tensor, sim: Tensor, weight: Tensor | SparsePairWeights
    ) -> tuple[Tensor, Tensor]:
        return weight @ reference, weight.T @ query


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
        return -_squared_euclidean(query, reference)

    def pairwise_vjp(
        self, query: Tensor, reference: Tensor, sim: Tensor, weight: Tensor | SparsePairWeights
    ) -> tuple[Tensor, Tensor]:
        # ∂(−‖q_i − r_j‖²)/∂q_i = 2 (r_j − q_i)
        return _difference_vjp(query, reference, weight, scale=-2.0)


class LpDistance(BaseSimilarity):
    """``d(q, r) = ‖q − r‖_p ** power`` on L2-normalised embeddings by default (PML's ``LpDistance``).

    Computed by ``torch.cdist`` on the block (one matmul and a fused backward for ``p = 2``, a zero gradient at
    zero distance); ``power = 2`` with ``p = 2`` uses ``‖q‖² + ‖r‖² − 2 q·r`` clamped at 0 and skips the root.
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
            return _squared_euclidean(query, reference).clamp_min(0)
        distance = torch.cdist(query, reference, p=self.p)
        return distance if self.power == 1 else distance**self.power

    def pairwise_vjp(
        self, query: Tensor, reference: Tensor, sim: Tensor, weight: Tensor | SparsePairWeights
    ) -> tuple[Tensor, Tensor]:
        if self.p != 2 or self.power not in (1, 2):
            return super().pairwise_vjp(query, reference, sim, weight)
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
        return _difference_vjp(query, reference, weight, scale=2.0 if self.power == 2 else 1.0)

    def __repr__(self) -> str:
        return f"LpDistance(normalize_embeddings={self.normalize_embeddings}, p={self.p}, power={self.power})"


def _squared_euclidean(query: Tensor, reference: Tensor) -> Tensor:
    q_norm = (query * query).sum(1, keepdim=True)
    r_norm = (reference * reference).sum(1)
    return q_norm + r_norm - 2 * (query @ reference.T)


def _difference_vjp(
    query: Tensor, reference: Tensor, weight: Tensor | SparsePairWeights, scale: float
) -> tuple[Tensor, Tensor]:
    """Gradients of ``Σ_ij V_ij · f(q_i − r_j)`` when ``∂f/∂q_i = scale · (q_i − r_j)`` (``V = weight``):
    ``scale · (q_i Σ_j V_ij − (V R)_i)`` and ``scale · (r_j Σ_i V_ij − (Vᵀ Q)_j)``."""
    grad_q = query * weight.sum(1, keepdim=True) - weight @ reference
    grad_r = reference * weight.sum(0)[:, None] - weight.T @ query
    return grad_q.mul_(scale), grad_r.mul_(scale)
