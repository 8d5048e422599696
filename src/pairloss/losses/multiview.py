"""Losses for ``k ≥ 2`` views of the same ``n`` objects: the multi-marginal matching gap and two baselines.

All take ``views`` of shape ``[k, n, d]`` (or a sequence of ``k`` matrices ``[n, d]``): ``views[l, i]`` is the
embedding of object ``i`` seen through view ``l``. The views are L2-normalised inside each loss.

* :func:`m3g_loss` (Piran, Klein, Thornton, Cuturi, ICML 2024) contrasts the cost of the ground-truth
  ``k``-tuples with the entropic multi-marginal OT cost over all ``n^k`` tuples.
* :func:`pairwise_infonce_loss`: InfoNCE on each of the ``k(k−1)/2`` pairs of views.
* :func:`average_of_rest_infonce_loss`: InfoNCE of each view against the average of the other ``k − 1``.

None is built by :func:`pairloss.pair_loss`: M3G is an optimal-transport problem over ``k``-tuples, and InfoNCE's
loss of a pair is a softmax over its whole row (as NT-Xent's), so the baselines run on the engine with row
functions of their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pairloss._validation import check_choice, check_floating, check_positive
from pairloss.engine import PairBlock, cross_rank_hook, row_block_sums
from pairloss.losses.base import BatchAxis, PairLoss, loss_module
from pairloss.losses.ot import (
    DEFAULT_OT_MEMORY_BUDGET,
    OTBudget,
    check_tensor_size,
    multimarginal_sinkhorn,
    pairwise_cost_tensor,
    pairwise_pairs,
)
from pairloss.similarity import CosineSimilarity

__all__ = [
    "AverageOfRestInfoNCELoss",
    "M3GLoss",
    "M3GSolve",
    "PairwiseInfoNCELoss",
    "average_of_rest_infonce_loss",
    "m3g_loss",
    "pairwise_infonce_loss",
]

Views = Tensor | Sequence[Tensor]
PairCost = Callable[[Tensor, Tensor], Tensor]
COSTS = ("circular_variance", "sqeuclidean")
#: Objects are along axis 1 of ``[k, n, d]`` (axis 0 of each matrix of a list of views): a batch split over ranks is
#: joined there.
VIEWS_BATCH_AXES = {"views": BatchAxis(axis=1)}


def check_views(views: Views, name: str = "views") -> Tensor:
    """Check ``k ≥ 2`` views of the same ``n ≥ 1`` objects with ``d ≥ 1`` features; return them as ``[k, n, d]``."""
    if not isinstance(views, Tensor):
        if len(views) == 0:
            raise ValueError(f"{name} is empty: give k >= 2 views")
        for l, view in enumerate(views):
            check_floating(view, f"{name}[{l}]", ndim=2)
            if view.shape != views[0].shape:
                raise ValueError(
                    f"all views must have the same shape [n, d]: {name}[0] is {tuple(views[0].shape)} "
                    f"but {name}[{l}] is {tuple(view.shape)}"
                )
            if view.dtype != views[0].dtype or view.device != views[0].device:
                raise ValueError(f"{name}[{l}] has dtype/device {view.dtype}/{view.device}, unlike {name}[0]")
        views = torch.stack(list(views))
    check_floating(views, name, ndim=3)
    k, n, d = views.shape
    if k < 2:
        raise ValueError(f"a multi-view loss needs k >= 2 views, got {k}")
    if n == 0:
        raise ValueError(f"{name} is empty: a batch needs at least one object")
    if d == 0:
        raise ValueError(f"{name} must have at least one feature, got shape {tuple(views.shape)}")
    return views


# --------------------------------------------------------------------------------------------------------------
# M3G


def _pairwise_costs(z: Tensor, cost: str | PairCost) -> list[Tensor]:
    """The ``k(k−1)/2`` cost matrices ``c_lm[i, j] = c(z_l[i], z_m[j])`` of the sum-of-pairs cost tensor."""
    k = z.shape[0]
    matrices = []
    for l, m in pairwise_pairs(k):
        if callable(cost):
            matrices.append(cost(z[l], z[m]))
        else:
            # ‖x − y‖² = 2 − 2 x·y on the unit sphere; circular variance divides by k².
            sq = (2.0 - 2.0 * z[l] @ z[m].T).clamp_min(0.0)
            matrices.append(sq / (k * k) if cost == "circular_variance" else sq)
    return matrices


@dataclass(frozen=True)
class M3GSolve:
    """Diagnostics of the multi-marginal Sinkhorn solve behind one M3G evaluation."""

    epsilon: float
    iterations: int
    marginal_error: float
    converged: bool
    ot_value: float
    ground_truth_cost: float


class _EntropicMultiMarginalOT(torch.autograd.Function):
    """``OT_ε(Σ_{l<m} c_lm)`` as a function of the stacked pairwise cost matrices; backward by Danskin's theorem.

    ``∂OT_ε/∂C = P_ε`` (the optimal coupling), so ``∂OT_ε/∂c_lm = P_lm``, the ``(l, m)`` two-view marginal of
    ``P_ε``. No gradient flows through the Sinkhorn iterations. ``ε`` is treated as a constant.
    """

    @staticmethod
    def forward(
        ctx: Any, pairwise: Tensor, n: int, k: int, options: dict[str, Any], record: list[M3GSolve]
    ) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            cost = pairwise_cost_tensor(list(pairwise), [n] * k)
            result = multimarginal_sinkhorn(cost, **options)
            bimarginals = torch.stack(result.bimarginals())
            ground_truth = float(sum(torch.diagonal(c).mean() for c in pairwise))
        ctx.save_for_backward(bimarginals)
        record.append(
            M3GSolve(
                epsilon=result.epsilon,
                iterations=result.iterations,
                marginal_error=result.marginal_error,
                converged=result.converged,
                ot_value=float(result.value),
                ground_truth_cost=ground_truth,
            )
        )
        epsilon = torch.tensor(result.epsilon, dtype=pairwise.dtype, device=pairwise.device)
        ctx.mark_non_differentiable(epsilon)
        return result.value.to(pairwise.dtype), epsilon

    @staticmethod
    def backward(ctx: Any, grad_value: Tensor, grad_epsilon: Tensor) -> tuple[Tensor | None, ...]:
        (bimarginals,) = ctx.saved_tensors
        return grad_value * bimarginals, None, None, None, None


def _m3g(
    views: Views,
    cost: str | PairCost,
    epsilon: float | None,
    relative_epsilon: float | None,
    tol: float,
    max_iter: int,
    check_every: int,
    memory_budget: OTBudget,
) -> tuple[Tensor, M3GSolve]:
    z = check_views(views)
    if not callable(cost):
        check_choice(cost, "cost", COSTS)
    k, n, _ = z.shape
    check_tensor_size([n] * k, z.dtype, memory_budget)
    z = F.normalize(z, dim=-1)
    pairwise = _pairwise_costs(z, cost)
    ground_truth = sum(torch.diagonal(c).mean() for c in pairwise)
    assert isinstance(ground_truth, Tensor)
    options = {
        "epsilon": epsilon,
        "relative_epsilon": relative_epsilon,
        "tol": tol,
        "max_iter": max_iter,
        "check_every": check_every,
        "memory_budget": memory_budget,
    }
    record: list[M3GSolve] = []
    ot_value, eps = _EntropicMultiMarginalOT.apply(torch.stack(pairwise), n, k, options, record)
    # KL(J ‖ ⊗a) = (k − 1) log n for the diagonal coupling J with uniform weights: J is feasible, so
    # OT_ε ≤ ⟨J, C⟩ + ε (k − 1) log n and the gap below is ≥ 0.
    gap = ground_truth + eps * ((k - 1) * math.log(n)) - ot_value
    return gap, record[0]


def m3g_loss(
    views: Views,
    *,
    cost: str | PairCost = "circular_variance",
    epsilon: float | None = None,
    relative_epsilon: float | None = None,
    tol: float = 1e-3,
    max_iter: int = 500,
    check_every: int = 5,
    memory_budget: OTBudget = DEFAULT_OT_MEMORY_BUDGET,
) -> Tensor:
    """Multi-marginal matching gap (Piran, Klein, Thornton, Cuturi, ICML 2024).

    With the views L2-normalised and the cost tensor ``C[i_1..i_k] = Σ_{l<m} c_lm[i_l, i_m]``,

        M3G = ⟨J, C⟩ + ε (k − 1) log n − OT_ε(C),
        OT_ε(C) = min_{P ∈ Π(1/n, ..., 1/n)} ⟨P, C⟩ + ε KL(P ‖ ⊗_l 1/n)

    where ``J`` is the ground-truth coupling (mass ``1/n`` on each tuple ``(i, ..., i)``). ``J`` is feasible and
    ``KL(J ‖ ⊗1/n) = (k − 1) log n``, so ``M3G ≥ 0``; equivalently ``⟨J,C⟩ − εH(J) − OT^H_ε(C)`` with the
    negative-entropy convention ``OT^H_ε = OT_ε − ε k log n`` and ``H(J) = log n``. As ``ε → 0`` it tends to the
    gap between the ground-truth and the optimal multi-marginal assignment cost.

    Args:
        views: ``[k, n, d]`` (or ``k`` matrices ``[n, d]``), ``k ≥ 2``.
        cost: ``"circular_variance"`` (default): ``c = 1 − ‖(1/k) Σ_l z_l‖² = (1/k²) Σ_{l<m} ‖z_l − z_m‖²``;
            ``"sqeuclidean"``: ``Σ_{l<m} ‖z_l − z_m‖²``; or a callable ``c(x [n, d], y [n, d]) → [n, n]``
            applied to every pair of (normalised) views.
        epsilon, relative_epsilon: the regularisation, absolute or relative to the std of ``C`` (default
            ``0.05 × std``); it is treated as a constant by the gradient.
        tol, max_iter, check_every, memory_budget: passed to :func:`pairloss.losses.ot.multimarginal_sinkhorn`.

    The gradient is Danskin's: ``(J − P_ε)`` contracted with ``∂C/∂views``, no backpropagation through the
    iterations. ``ValueError`` for mismatched view shapes, ``k < 2``, NaN/inf, or ``n^k`` beyond the budget.
    """
    gap, _ = _m3g(views, cost, epsilon, relative_epsilon, tol, max_iter, check_every, memory_budget)
    return gap


@loss_module(
    m3g_loss,
    formula="⟨J, C⟩ + ε(k−1)log n − min_{P∈Π(1/n,…,1/n)} [⟨P, C⟩ + ε KL(P‖⊗1/n)],  C = Σ_{l<m} c(z_l, z_m)",
    paper=(
        "Piran, Klein, Thornton, Cuturi. Contrasting multiple representations with the multi-marginal matching "
        "gap. ICML 2024"
    ),
    family="multiview",
)
class M3GLoss(PairLoss):
    """Multi-marginal matching gap of ``k`` views: see :func:`m3g_loss`.

    After each call, :attr:`last_solve` holds the solver's diagnostics (ε, iterations, marginal error).
    """

    batch_axes = VIEWS_BATCH_AXES

    def __init__(
        self,
        cost: str | PairCost = "circular_variance",
        epsilon: float | None = None,
        relative_epsilon: float | None = None,
        tol: float = 1e-3,
        max_iter: int = 500,
        check_every: int = 5,
        memory_budget: OTBudget = DEFAULT_OT_MEMORY_BUDGET,
    ) -> None:
        super().__init__()
        if not callable(cost):
            check_choice(cost, "cost", COSTS)
        self.cost = cost
        self.epsilon = epsilon
        self.relative_epsilon = relative_epsilon
        self.tol = tol
        self.max_iter = max_iter
        self.check_every = check_every
        self.memory_budget = memory_budget
        self.last_solve: M3GSolve | None = None

    def forward(self, views: Views) -> Tensor:
        gap, self.last_solve = _m3g(
            views,
            self.cost,
            self.epsilon,
            self.relative_epsilon,
            self.tol,
            self.max_iter,
            self.check_every,
            self.memory_budget,
        )
        return gap


# --------------------------------------------------------------------------------------------------------------
# Pairwise baselines


def _infonce_sum(query: Tensor, reference: Tensor, temperature: float) -> Tensor:
    """``Σ_i [−s_ii/τ + log Σ_j exp(s_ij/τ)]`` for cosine similarities of ``query[i]`` vs ``reference[j]``."""
    if cross_rank_hook() is not None:
        raise ValueError(
            "the multi-view InfoNCE losses pair objects by their index in the batch, which the engine's cross-rank "
            "pairs do not keep; wrap the loss in CrossRankLoss, which gathers the views along the object axis"
        )
    n = query.shape[0]
    ids = torch.arange(n, device=query.device)

    def row(block: PairBlock) -> Tensor:
        logits = block.sim / temperature
        positive = torch.where(block.positive, logits, 0.0).sum(dim=1)
        return (torch.logsumexp(logits, dim=1) - positive).sum().reshape(1)

    sums = row_block_sums(row, query, ids, reference, ids, similarity=CosineSimilarity(), working_copies=4)
    return sums[0]


def pairwise_infonce_loss(views: Views, *, temperature: float = 0.1) -> Tensor:
    """The ``½k(k−1)`` pairwise extension of InfoNCE (Oord et al. 2018; Tian, Krishnan, Isola, ECCV 2020).

    With cosine similarities ``s^{lm}_ij = ⟨z_l[i], z_m[j]⟩`` and temperature ``τ``,

        L = 1/(k(k−1)) Σ_{l≠m} (1/n) Σ_i [−s^{lm}_ii/τ + log Σ_j exp(s^{lm}_ij/τ)]

    i.e. the symmetric InfoNCE of every pair of views, averaged over pairs (CMC's "full graph").
    """
    z = check_views(views)
    check_positive(temperature, "temperature")
    k, n, _ = z.shape
    total = sum(
        _infonce_sum(z[l], z[m], temperature) + _infonce_sum(z[m], z[l], temperature) for l, m in pairwise_pairs(k)
    )
    assert isinstance(total, Tensor)
    return total / (k * (k - 1) * n)


def average_of_rest_infonce_loss(views: Views, *, temperature: float = 0.1) -> Tensor:
    """One-vs-average-of-rest InfoNCE: each view against the mean of the other ``k − 1`` views.

    With ``z̄_{−l}[j] = (1/(k−1)) Σ_{m≠l} z_m[j]`` (normalised inside the cosine similarity),

        L = 1/(2k) Σ_l (1/n) Σ_i [ℓ(z_l[i]; z̄_{−l}) + ℓ(z̄_{−l}[i]; z_l)],
        ℓ(q_i; R) = −s(q_i, r_i)/τ + log Σ_j exp(s(q_i, r_j)/τ)

    The reduced-embedding baseline of Piran et al. (ICML 2024), as in multi-view SimCLR variants.
    """
    z = check_views(views)
    check_positive(temperature, "temperature")
    k, n, _ = z.shape
    z = F.normalize(z, dim=-1)
    total = z.sum(dim=0)
    terms = []
    for l in range(k):
        rest = (total - z[l]) / (k - 1)
        terms.append(_infonce_sum(z[l], rest, temperature) + _infonce_sum(rest, z[l], temperature))
    return torch.stack(terms).sum() / (2 * k * n)


def _check_temperature(temperature: float = 0.1, **_: object) -> None:
    check_positive(temperature, "temperature")


@loss_module(
    pairwise_infonce_loss,
    formula="1/(k(k−1)) Σ_{l≠m} mean_i [−s^{lm}_ii/τ + log Σ_j exp(s^{lm}_ij/τ)]",
    paper="Tian, Krishnan, Isola. Contrastive multiview coding. ECCV 2020 (InfoNCE: Oord et al. 2018)",
    family="multiview",
    check=_check_temperature,
)
class PairwiseInfoNCELoss(PairLoss):
    """InfoNCE summed over the ``½k(k−1)`` pairs of views: see :func:`pairwise_infonce_loss`."""

    batch_axes = VIEWS_BATCH_AXES


@loss_module(
    average_of_rest_infonce_loss,
    formula="1/(2k) Σ_l mean_i [ℓ(z_l[i]; z̄_{−l}) + ℓ(z̄_{−l}[i]; z_l)],  z̄_{−l} = mean_{m≠l} z_m",
    paper="Piran, Klein, Thornton, Cuturi. Contrasting multiple representations with the multi-marginal matching "
    "gap. ICML 2024 (one-vs-average-of-rest baseline)",
    family="multiview",
    check=_check_temperature,
)
class AverageOfRestInfoNCELoss(PairLoss):
    """InfoNCE of each view against the average of the others: see :func:`average_of_rest_infonce_loss`."""

    batch_axes = VIEWS_BATCH_AXES
