"""Which weight? How much each pair counts: the third of the four parts of a pairwise loss.

A weight is a constant per pair (no gradient flows through it, as in the papers): it multiplies the pair's loss,
``w_ij · φ(z_ij)``, or, for a *margin* weight, the pair's margin inside the link, ``φ(w_ij · z_ij)`` (circle loss's
self-paced weighting).

Pairs of embeddings (:func:`pairloss.pair_loss` with label, view or mined pairs), computed per block from the
block's scores:

* :class:`Uniform`: every pair the same (``value``, 1 by default);
* :class:`MultiSimilarity`: the general pair weights of Wang et al. (CVPR 2019): a positive pair weighs
  ``e^{−α(s_ij − λ)} / (1 + Σ_{k ∈ P_i} e^{−α(s_ik − λ)})``, a negative ``e^{β(s_ij − λ)} / (1 + Σ_{k ∈ N_i}
  e^{β(s_ik − λ)})`` (with :class:`pairloss.links.Linear`, the gradient of the weighted sum is the gradient of
  the multi-similarity loss);
* :class:`Circle`: circle loss's margin weights ``α_p = [1 + m − s]_+`` and ``α_n = [s + m]_+`` (Sun et al. 2020).

Pairs of a ranked list (``[B, L, L]``, from the current scores and the relevance):

* :class:`DeltaNDCG`: LambdaRank's ``|ΔNDCG_ij|``; :class:`LambdaWeight`: it and the NDCG-Loss1/2/2++ weights of
  LambdaLoss;
* :class:`TopN`: AWTR's adaptive top-N weights ``α + (1 − α) max(m_i, m_j)``.

Neighbouring pixels: :class:`DistanceAware`, BoxSnake's colour affinity ``exp(−‖LAB_i − LAB_j‖ / σ)``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

__all__ = [
    "LAMBDA_SCHEMES",
    "Circle",
    "DeltaNDCG",
    "DistanceAware",
    "LambdaWeight",
    "ListWeight",
    "MultiSimilarity",
    "PairWeight",
    "TopN",
    "Uniform",
    "dcg_discounts",
    "exp_gains",
    "ideal_dcg",
    "rank_order",
    "rank_positions",
    "top_n_membership",
]


class PairWeight(ABC):
    """A weight of the pairs of a block of embeddings.

    ``on = "loss"`` multiplies each pair's loss, ``on = "margin"`` each pair's margin inside the link.
    """

    on: str = "loss"

    @abstractmethod
    def __call__(self, sim: Tensor, mask: Tensor | None, positive: bool) -> Tensor | float:
        """Weights of the pairs in ``mask`` (``[b, M]``, or a scalar for all) given the block's scores ``sim``;
        ``positive`` says which kind of pair ``mask`` holds. Only the entries on ``mask`` are used. A margin weight
        is elementwise and is called with gathered scores and ``mask=None``."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Uniform(PairWeight):
    """Every pair weighs ``value`` (1 by default)."""

    def __init__(self, value: float = 1.0) -> None:
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ValueError(f"value must be a finite number >= 0, got {value!r}")
        self.value = float(value)

    def __call__(self, sim: Tensor, mask: Tensor | None, positive: bool) -> float:
        return self.value


class MultiSimilarity(PairWeight):
    """The multi-similarity pair weights (Wang, Han, Huang, Dong, Scott, CVPR 2019, eq. 9/10 as normalised
    softmax shares), on similarities ``s``:

        w⁺_ij = e^{−α(s_ij − λ)} / (1 + Σ_{k ∈ P_i} e^{−α(s_ik − λ)})
        w⁻_ij = e^{β(s_ij − λ)} / (1 + Σ_{k ∈ N_i} e^{β(s_ik − λ)})

    A hard positive (low ``s``) or a hard negative (high ``s``) gets a large share of its anchor's weight.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5) -> None:
        self.alpha, self.beta, self.base = float(alpha), float(beta), float(base)

    def __call__(self, sim: Tensor, mask: Tensor | None, positive: bool) -> Tensor:
        if mask is None:
            raise ValueError("the multi-similarity weights depend on the anchor's other pairs: they need its mask")
        scale = -self.alpha if positive else self.beta
        x = (scale * (sim - self.base)).masked_fill(~mask, float("-inf"))
        shift = x.amax(dim=1, keepdim=True).clamp_min(0)
        terms = torch.exp(x - shift)
        return terms / (terms.sum(dim=1, keepdim=True) + torch.exp(-shift))


class Circle(PairWeight):
    """Circle loss's self-paced margin weights (Sun et al., CVPR 2020): ``α_p = [1 + m − s]_+`` on positive pairs,
    ``α_n = [s + m]_+`` on negative pairs, multiplying the margins ``s − (1 − m)`` and ``m − s``."""

    on = "margin"

    def __init__(self, m: float = 0.4) -> None:
        self.m = float(m)

    def __call__(self, sim: Tensor, mask: Tensor | None, positive: bool) -> Tensor:
        return (1 + self.m - sim).clamp_min_(0) if positive else (sim + self.m).clamp_min_(0)


# ------------------------------------------------------------------------------------------------ list weights


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


def rank_order(scores: Tensor, valid: Tensor) -> Tensor:
    """``[B, L]``: the items of each list by descending (detached) score, padded items last, ties by position."""
    key = torch.where(valid, scores.detach(), torch.full((), -math.inf, dtype=scores.dtype, device=scores.device))
    return torch.argsort(key, dim=-1, descending=True, stable=True)


def rank_positions(scores: Tensor, valid: Tensor) -> Tensor:
    """0-based rank of every item when sorted by descending score (padded items last, ties by position)."""
    order = rank_order(scores, valid)
    positions = torch.arange(scores.shape[-1], device=scores.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def top_n_membership(scores: Tensor, relevance: Tensor, valid: Tensor, top_n: int) -> Tensor:
    """``[B, L]`` bool: the item is in the current top-N by score or in the true top-N by relevance.

    The predicted top-N is the ``top_n`` highest (detached) scores among the real items of each list; the true
    top-N is every real item whose relevance is at least the ``top_n``-th largest relevance of its list (ties are
    all in). Lists shorter than ``top_n`` have all their items in.
    """
    neg_inf = torch.finfo(scores.dtype).min
    k = min(top_n, scores.shape[1])
    member = torch.zeros_like(valid)
    if k == 0:
        return member
    masked = torch.where(valid, scores.detach(), torch.full_like(scores, neg_inf))
    predicted = member.scatter(1, masked.topk(k, dim=1).indices, True) & valid
    masked_rel = torch.where(valid, relevance, torch.full_like(relevance, neg_inf))
    kth = masked_rel.topk(k, dim=1).values[:, -1:]
    true = valid & (relevance >= kth)
    return predicted | true


class ListWeight(ABC):
    """A weight of the pairs ``(i, j)`` of ranked lists, from the current (detached) scores and the relevance."""

    @abstractmethod
    def __call__(self, scores: Tensor, relevance: Tensor, valid: Tensor) -> Tensor | float:
        """``[B, L, L]`` weights (or a scalar) for lists ``scores [B, L]``, ``relevance [B, L]``, ``valid [B, L]``."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({fields})"


#: LambdaLoss weighting schemes (Wang et al. 2018).
LAMBDA_SCHEMES = ("ndcg_loss1", "ndcg_loss2", "ndcg_loss2pp", "lambdarank")


class LambdaWeight(ListWeight):
    """The LambdaLoss weights (Wang, Li, Golbandi, Bendersky, Najork, CIKM 2018), from the ranks ``r_i`` (1-based) by
    the current scores, ``D_i = log2(1 + r_i)`` and the gains ``G_i = (2^{y_i} − 1) / IDCG@k``:

    * ``"lambdarank"``: ``|ΔNDCG_ij| = |1/D_i − 1/D_j| · |G_i − G_j|`` (LambdaRank, Burges et al. 2006);
    * ``"ndcg_loss2"``: ``δ_ij |G_i − G_j|`` with ``δ_ij = 1/log2(1+|r_i−r_j|) − 1/log2(2+|r_i−r_j|)``;
    * ``"ndcg_loss2pp"``: ``μ δ_ij |G_i − G_j| + |1/D_i − 1/D_j| |G_i − G_j|``;
    * ``"ndcg_loss1"``: ``G_i / D_i``.
    """

    def __init__(self, scheme: str = "lambdarank", k: int | None = None, mu: float = 10.0) -> None:
        if scheme not in LAMBDA_SCHEMES:
            raise ValueError(f"scheme must be one of {LAMBDA_SCHEMES}, got {scheme!r}")
        self.scheme, self.k, self.mu = scheme, k, float(mu)

    def rank_factor(self, length: int, like: Tensor) -> Tensor:
        """``[length, length]``: the part of ``w_ij`` that depends on the ranks only, for the items at (0-based)
        ranks ``p`` and ``q`` of lists sorted by score; the weight of such a pair is this factor times
        ``|G_p − G_q|`` (``"lambdarank"``, ``"ndcg_loss2"``, ``"ndcg_loss2pp"``). Not defined for
        ``"ndcg_loss1"``, whose weight ``G_p / D_p`` is not a product with the gain gap."""
        if self.scheme == "ndcg_loss1":
            raise ValueError("the ndcg_loss1 weight G_i / D_i has no factor over the gain gap")
        rank = torch.arange(length, device=like.device)
        inv_d = 1.0 / torch.log2(2.0 + rank.to(like.dtype))
        discount_gap = (inv_d[:, None] - inv_d[None, :]).abs()
        if self.scheme == "lambdarank":
            return discount_gap
        rank_gap = (rank[:, None] - rank[None, :]).abs().to(like.dtype).clamp_min(1.0)
        delta = 1.0 / torch.log2(1.0 + rank_gap) - 1.0 / torch.log2(2.0 + rank_gap)
        return delta if self.scheme == "ndcg_loss2" else self.mu * delta + discount_gap

    def __call__(self, scores: Tensor, relevance: Tensor, valid: Tensor) -> Tensor:
        rank = rank_positions(scores, valid)
        inv_d = 1.0 / torch.log2(2.0 + rank.to(scores.dtype))
        idcg = ideal_dcg(relevance, valid, self.k).clamp_min(torch.finfo(scores.dtype).tiny)
        gain = exp_gains(relevance, valid) / idcg[:, None]
        if self.scheme == "ndcg_loss1":
            return (gain * inv_d)[:, :, None]
        gain_gap = (gain[:, :, None] - gain[:, None, :]).abs()
        if self.scheme == "lambdarank":
            return gain_gap.mul_((inv_d[:, :, None] - inv_d[:, None, :]).abs())
        rank_gap = (rank[:, :, None] - rank[:, None, :]).abs().to(scores.dtype).clamp_min(1.0)
        delta = 1.0 / torch.log2(1.0 + rank_gap) - 1.0 / torch.log2(2.0 + rank_gap)
        if self.scheme == "ndcg_loss2":
            return delta * gain_gap
        return self.mu * delta * gain_gap + (inv_d[:, :, None] - inv_d[:, None, :]).abs() * gain_gap


class DeltaNDCG(LambdaWeight):
    """LambdaRank's weight ``|ΔNDCG_ij| = |1/D_i − 1/D_j| · |G_i − G_j|``: the change of NDCG@k when items i and j
    swap ranks (Burges, Ragno, Le, NeurIPS 2006); ``LambdaWeight("lambdarank", k)``."""

    def __init__(self, k: int | None = None) -> None:
        super().__init__("lambdarank", k)


class TopN(ListWeight):
    """AWTR's adaptive top-N weights ``w_ij = α + (1 − α) · max(m_i, m_j)``, where ``m`` marks the items in the
    current top-N by score or in the true top-N by relevance (:func:`top_n_membership`)."""

    def __init__(self, top_n: int = 10, alpha: float = 0.3) -> None:
        if top_n < 1:
            raise ValueError(f"top_n must be >= 1, got {top_n}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.top_n, self.alpha = top_n, float(alpha)

    def __call__(self, scores: Tensor, relevance: Tensor, valid: Tensor) -> Tensor:
        member = top_n_membership(scores, relevance, valid, self.top_n)
        touches = member[:, :, None] | member[:, None, :]
        return torch.where(touches, scores.new_tensor(1.0), scores.new_tensor(self.alpha))


class DistanceAware:
    """BoxSnake's distance-aware weight of two neighbouring pixels: their colour affinity
    ``w_ij = exp(−‖LAB_i − LAB_j‖₂ / σ)`` (the same colour → 1, far apart colours → 0)."""

    def __init__(self, sigma: float = 2.0) -> None:
        if not (isinstance(sigma, int | float) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be > 0, got {sigma!r}")
        self.sigma = float(sigma)

    def __call__(self, features_i: Tensor, features_j: Tensor) -> Tensor:
        """Weights of the pixel pairs of two aligned ``[N, C, H, W]`` feature views (``C`` = colour channels)."""
        return torch.exp(-torch.linalg.vector_norm(features_i - features_j, dim=1) / self.sigma)

    def __repr__(self) -> str:
        return f"DistanceAware(sigma={self.sigma!r})"
