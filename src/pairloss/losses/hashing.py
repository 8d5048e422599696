"""Deep-hashing pair losses on relaxed binary codes ``u ∈ (−1, 1)^K`` (``tanh`` outputs).

Two samples are similar (``s_ij = 1``) when they share a label: equal class ids, or at least one common label for
multi-hot ``[N, C]`` labels (multi-label hashing). Every loss runs on the row-block engine
(:func:`pairloss.engine.row_block_sums`), so no ``N×N`` matrix is held; the quantisation terms are per-sample,
``O(N·K)``, outside the engine. Pairs are ordered pairs ``(i, j)``, ``i ≠ j`` (or query × reference when a separate
reference set is given), and the quantisation term is taken over ``embeddings`` only.

* DPSH (Li, Wang, Kang, IJCAI 2016): pairwise likelihood with ``θ_ij = ½ u_i·u_j``,
  ``ℓ = log(1 + e^θ) − s θ``, plus ``η ‖u − sign(u)‖²``.
* HashNet (Cao, Long, Wang, Yu, ICCV 2017): the same likelihood with ``θ = α u_i·u_j``, positive and negative pairs
  reweighted to equal total weight (``|S|/|S₁|`` and ``|S|/|S₀|``).
* DSH (Liu, Wang, Shan, Chen, CVPR 2016): contrastive loss on ``d = ‖u_i − u_j‖²`` with margin ``m = 2K`` and an
  L1 regulariser ``α ‖|u| − 1‖₁``.
* ASH (Fang et al., attention-based saliency hashing): contrastive loss on the relaxed Hamming distance
  ``D = ½(K − u_i·u_j)`` with a margin and a quantisation term ``η (|u| − 1)²``.

DPSH's reference code compares each batch with the codes of **all** training samples (a matrix ``U`` updated with
the batch's outputs before the loss), as does the DeepHash-pytorch code of DSH; :class:`HashCodeMemory` keeps that
matrix, and every loss here takes it as its reference set::

    memory = HashCodeMemory(train_labels, n_bits)
    codes = model(images[index])
    loss = dpsh_loss(codes, train_labels[index], *memory.update(index, codes))
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pairloss.engine import PairBlock, row_block_sums
from pairloss.losses.base import FunctionalEmbeddingLoss, check_pair_inputs, mean_of_active
from pairloss.similarity import DotProductSimilarity, NegSquaredEuclideanSimilarity

__all__ = [
    "ASHLoss",
    "DPSHLoss",
    "DSHLoss",
    "HashCodeMemory",
    "HashNetLoss",
    "ash_loss",
    "dpsh_loss",
    "dsh_loss",
    "hashnet_loss",
    "quantization_penalty",
]

PairTerm = Callable[[Tensor], Tensor]


def quantization_penalty(codes: Tensor, power: int = 2) -> Tensor:
    """``mean_{i,k} ||u_ik| − 1|^power``: how far relaxed codes are from ``±1``, per bit.

    With ``power=2`` this is ``mean_i ‖u_i − sign(u_i)‖² / K`` (DPSH's term with ``b = sign(u)``; ASH's corrected
    term); ``power=1`` is DSH's L1 regulariser ``‖|u| − 1‖₁ / K``. It drives ``|u|`` to 1, leaving the sign free.
    """
    if codes.numel() == 0:
        return codes.sum() * 0
    gap = (codes.abs() - 1).abs()
    return (gap * gap).mean() if power == 2 else gap.mean()


class HashCodeMemory(nn.Module):
    """The relaxed codes of every training sample as last computed: DPSH's ``U`` (Li, Wang, Kang, IJCAI 2016).

    ``update(indices, codes)`` writes the batch's codes (detached) at their training indices and returns
    ``(codes, labels)`` of every sample written so far, the batch included, to pass as a loss's reference set:
    each batch is then compared with all training codes (the gradient flows through the batch's side only), as in
    the reference implementations of DPSH and DSH. Rows never written are left out (the reference code starts
    from zeros, which for DPSH only rescales the loss, and for DSH would pull codes towards 0). The buffers are
    part of the module's state, so a training checkpoint holds the memory.
    """

    codes: Tensor
    written: Tensor
    labels: Tensor

    def __init__(self, labels: Tensor, n_bits: int) -> None:
        super().__init__()
        if labels.ndim not in (1, 2) or labels.shape[0] == 0:
            raise ValueError(f"labels must be [N] class ids or [N, C] multi-hot with N >= 1, got {tuple(labels.shape)}")
        if n_bits < 1:
            raise ValueError(f"n_bits must be >= 1, got {n_bits}")
        self.register_buffer("codes", torch.zeros(labels.shape[0], n_bits))
        self.register_buffer("written", torch.zeros(labels.shape[0], dtype=torch.bool))
        self.register_buffer("labels", labels.detach().clone())

    def update(self, indices: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
        """Store ``codes [b, K]`` at ``indices [b]``; return the codes and labels of every written row."""
        if codes.ndim != 2 or codes.shape[1] != self.codes.shape[1] or indices.shape != codes.shape[:1]:
            raise ValueError(
                f"codes must be [b, {self.codes.shape[1]}] with one index each, got codes {tuple(codes.shape)} "
                f"and indices {tuple(indices.shape)}"
            )
        self.codes[indices] = codes.detach().to(self.codes)
        self.written[indices] = True
        return self.codes[self.written], self.labels[self.written]


def _pair_sums(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None,
    ref_labels: Tensor | None,
    *,
    positive_term: PairTerm,
    negative_term: PairTerm,
    squared_distance: bool,
    block_size: int | None,
) -> Tensor:
    """``[Σ_pos ℓ, #pos, Σ_neg ℓ, #neg]`` where each term is a function of the block's dot products (or ``‖·‖²``)."""
    similarity = NegSquaredEuclideanSimilarity() if squared_distance else DotProductSimilarity()

    def row(block: PairBlock) -> Tensor:
        score = -block.sim if squared_distance else block.sim
        zero = torch.zeros((), dtype=score.dtype, device=score.device)
        pos = torch.where(block.positive, positive_term(score), zero)
        neg = torch.where(block.negative, negative_term(score), zero)
        return torch.stack([pos.sum(), block.positive.sum().to(zero), neg.sum(), block.negative.sum().to(zero)])

    return row_block_sums(
        row, embeddings, labels, ref_emb, ref_labels, similarity=similarity, block_size=block_size, working_copies=8
    )


def _check_weight(value: float, name: str) -> None:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def dpsh_loss(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    quantization_weight: float = 0.1,
    block_size: int | None = None,
) -> Tensor:
    """DPSH pairwise-likelihood loss (Li, Wang, Kang, Feature learning based deep supervised hashing with pairwise
    labels, IJCAI 2016).

        θ_ij = ½ u_i·u_j,   L = mean_{i≠j} [log(1 + e^{θ_ij}) − s_ij θ_ij] + η/K mean_i ‖u_i − sign(u_i)‖²

    ``log(1 + e^θ)`` is computed as ``softplus(θ)`` (no overflow for large ``θ``). The paper sums both terms with
    ``η = 10``; here the pairs are averaged and the quantisation is per bit, so ``η`` (``quantization_weight``)
    is on another scale.
    """
    embeddings, labels, ref_emb, ref_labels = check_pair_inputs(embeddings, labels, ref_emb, ref_labels)
    _check_weight(quantization_weight, "quantization_weight")
    sums = _pair_sums(
        embeddings,
        labels,
        ref_emb,
        ref_labels,
        positive_term=lambda dot: F.softplus(0.5 * dot) - 0.5 * dot,
        negative_term=lambda dot: F.softplus(0.5 * dot),
        squared_distance=False,
        block_size=block_size,
    )
    pairs = mean_of_active(sums[0] + sums[2], sums[1] + sums[3])
    return pairs + quantization_weight * quantization_penalty(embeddings)


def hashnet_loss(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    alpha: float | None = None,
    block_size: int | None = None,
) -> Tensor:
    """HashNet's weighted pairwise likelihood (Cao, Long, Wang, Yu, HashNet: Deep learning to hash by
    continuation, ICCV 2017).

        θ_ij = α u_i·u_j,   ℓ_ij = log(1 + e^{θ_ij}) − s_ij θ_ij,
        L = Σ w_ij ℓ_ij / Σ w_ij  with  w_ij = |S|/|S₁| (similar), |S|/|S₀| (dissimilar)
          = ½ (mean_{S₁} ℓ + mean_{S₀} ℓ)

    The balanced weights give similar and dissimilar pairs equal total weight; a batch without one kind of pair
    contributes 0 for that half. ``alpha`` defaults to ``10 / K`` as in the authors' code. The continuation
    (``u = tanh(β z)`` with ``β`` growing during training) belongs to the model (see
    :class:`pairloss.models.hashing.HashHead`).
    """
    embeddings, labels, ref_emb, ref_labels = check_pair_inputs(embeddings, labels, ref_emb, ref_labels)
    scale = 10.0 / embeddings.shape[1] if alpha is None else alpha
    if not scale > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    sums = _pair_sums(
        embeddings,
        labels,
        ref_emb,
        ref_labels,
        positive_term=lambda dot: F.softplus(scale * dot) - scale * dot,
        negative_term=lambda dot: F.softplus(scale * dot),
        squared_distance=False,
        block_size=block_size,
    )
    return 0.5 * (mean_of_active(sums[0], sums[1]) + mean_of_active(sums[2], sums[3]))


def dsh_loss(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    margin: float | None = None,
    regularization: float = 0.01,
    block_size: int | None = None,
) -> Tensor:
    """DSH contrastive loss (Liu, Wang, Shan, Chen, Deep supervised hashing for fast image retrieval, CVPR 2016).

        d_ij = ‖u_i − u_j‖²,   L = mean_{i≠j} [½ s_ij d_ij + ½ (1 − s_ij) [m − d_ij]_+] + α mean_i ‖|u_i| − 1‖₁

    with ``m = 2K`` by default (half the largest ``d`` between codes in ``[−1, 1]^K``) and ``α = 0.01``
    (``regularization``), the paper's values.
    """
    embeddings, labels, ref_emb, ref_labels = check_pair_inputs(embeddings, labels, ref_emb, ref_labels)
    m = 2.0 * embeddings.shape[1] if margin is None else margin
    if not m > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    _check_weight(regularization, "regularization")
    sums = _pair_sums(
        embeddings,
        labels,
        ref_emb,
        ref_labels,
        positive_term=lambda d: 0.5 * d,
        negative_term=lambda d: 0.5 * F.relu(m - d),
        squared_distance=True,
        block_size=block_size,
    )
    pairs = mean_of_active(sums[0] + sums[2], sums[1] + sums[3])
    return pairs + regularization * embeddings.shape[1] * quantization_penalty(embeddings, power=1)


def ash_loss(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    margin: float | None = None,
    quantization_weight: float = 0.1,
    block_size: int | None = None,
) -> Tensor:
    """ASH pairwise contrastive loss with quantisation (Fang et al., Attention-based saliency hashing for
    ophthalmic image retrieval, BIBM 2020).

        D_ij = ½ (K − u_i·u_j)   (the Hamming distance when u ∈ {−1, 1}^K),
        L = mean_{i≠j} [½ s_ij D_ij + ½ (1 − s_ij) [m − D_ij]_+] + η mean_{i,k} (|u_ik| − 1)²

    Two corrections to the published form: the margin must satisfy ``0 < m ≤ K`` (``D`` never exceeds ``K`` on
    ``[−1, 1]^K``, so a larger margin is never met and pushes every dissimilar pair forever); the default is
    ``m = K/2``. The quantisation term penalises ``|u| − 1``, which drives every bit to ``±1``, not ``u − 1``,
    which would drive every bit to ``+1`` and collapse the codes.
    """
    embeddings, labels, ref_emb, ref_labels = check_pair_inputs(embeddings, labels, ref_emb, ref_labels)
    bits = embeddings.shape[1]
    m = bits / 2.0 if margin is None else margin
    if not 0 < m <= bits:
        raise ValueError(f"margin must be in (0, K] = (0, {bits}] to be reachable, got {margin}")
    _check_weight(quantization_weight, "quantization_weight")
    sums = _pair_sums(
        embeddings,
        labels,
        ref_emb,
        ref_labels,
        positive_term=lambda dot: 0.25 * (bits - dot),
        negative_term=lambda dot: 0.5 * F.relu(m - 0.5 * (bits - dot)),
        squared_distance=False,
        block_size=block_size,
    )
    pairs = mean_of_active(sums[0] + sums[2], sums[1] + sums[3])
    return pairs + quantization_weight * quantization_penalty(embeddings)


class DPSHLoss(FunctionalEmbeddingLoss):
    """DPSH: pairwise likelihood ``log(1 + e^θ) − sθ`` with ``θ = ½ u_i·u_j``, plus quantisation. See
    :func:`dpsh_loss`."""

    formula = "mean_{i≠j}[log(1+e^θ) − s_ij θ], θ = ½u_i·u_j; + η‖u − sign u‖²"
    paper = "Li, Wang, Kang. Feature learning based deep supervised hashing with pairwise labels. IJCAI 2016"
    family = "hashing"

    def __init__(self, quantization_weight: float = 0.1, block_size: int | None = None) -> None:
        super().__init__()
        self.quantization_weight = quantization_weight
        self.block_size = block_size

    loss_function = staticmethod(dpsh_loss)
    options = ("quantization_weight", "block_size")


class HashNetLoss(FunctionalEmbeddingLoss):
    """HashNet: class-balanced pairwise likelihood with ``θ = α u_i·u_j``. See :func:`hashnet_loss`."""

    formula = "½(mean_{S1} ℓ + mean_{S0} ℓ), ℓ = log(1+e^θ) − s_ij θ, θ = α u_i·u_j"
    paper = "Cao, Long, Wang, Yu. HashNet: Deep learning to hash by continuation. ICCV 2017"
    family = "hashing"

    def __init__(self, alpha: float | None = None, block_size: int | None = None) -> None:
        super().__init__()
        self.alpha = alpha
        self.block_size = block_size

    loss_function = staticmethod(hashnet_loss)
    options = ("alpha", "block_size")


class DSHLoss(FunctionalEmbeddingLoss):
    """DSH: contrastive loss on ``‖u_i − u_j‖²`` with margin ``2K`` and an L1 regulariser. See :func:`dsh_loss`."""

    formula = "mean_{i≠j}[½s d + ½(1−s)[2K − d]_+] + α‖|u| − 1‖₁, d = ‖u_i − u_j‖²"
    paper = "Liu, Wang, Shan, Chen. Deep supervised hashing for fast image retrieval. CVPR 2016"
    family = "hashing"

    def __init__(
        self, margin: float | None = None, regularization: float = 0.01, block_size: int | None = None
    ) -> None:
        super().__init__()
        self.margin = margin
        self.regularization = regularization
        self.block_size = block_size

    loss_function = staticmethod(dsh_loss)
    options = ("margin", "regularization", "block_size")


class ASHLoss(FunctionalEmbeddingLoss):
    """ASH: contrastive loss on the relaxed Hamming distance, reachable margin, ``(|u| − 1)²`` quantisation.
    See :func:`ash_loss`."""

    formula = "mean_{i≠j}[½s D + ½(1−s)[m − D]_+] + η(|u| − 1)², D = ½(K − u_i·u_j), m ≤ K"
    paper = "Fang et al. Attention-based saliency hashing for ophthalmic image retrieval. BIBM 2020"
    family = "hashing"

    def __init__(
        self, margin: float | None = None, quantization_weight: float = 0.1, block_size: int | None = None
    ) -> None:
        super().__init__()
        self.margin = margin
        self.quantization_weight = quantization_weight
        self.block_size = block_size

    loss_function = staticmethod(ash_loss)
    options = ("margin", "quantization_weight", "block_size")
