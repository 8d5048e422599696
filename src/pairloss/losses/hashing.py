"""Deep-hashing pair losses on relaxed binary codes ``u ∈ (−1, 1)^K`` (``tanh`` outputs).

Two samples are similar (``s_ij = 1``) when they share a label: equal class ids, or at least one common label for
multi-hot ``[N, C]`` labels (multi-label hashing). Every pair term is a link of :mod:`pairloss.links` on a margin of
the codes' dot product (or squared distance), so each loss is a :class:`pairloss.builder.PairLossSpec` on the
builder's engine path: no ``N×N`` matrix is held and the gradient comes from the links' derivatives. The
quantisation terms are per-sample, ``O(N·K)``, outside the engine. Pairs are ordered pairs ``(i, j)``, ``i ≠ j`` (or
query × reference when a separate reference set is given), and the quantisation term is taken over ``embeddings``
only. Like the metric losses, each takes PML's call with an optional ``indices_tuple`` of mined pairs.

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
    reference, reference_labels = memory.update(index, codes)
    loss = dpsh_loss(codes, train_labels[index], ref_emb=reference, ref_labels=reference_labels)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pairloss._validation import check_embeddings
from pairloss.builder import PairLossSpec, evaluate_pairs
from pairloss.links import Hinge, Linear, Link, Logistic
from pairloss.losses.base import EmbeddingLoss, loss_module
from pairloss.reducers import MeanReducer, Reducer, get_reducer
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

IndicesTuple = tuple[Tensor, ...]


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
    ``(codes, labels)`` of every sample written so far, the batch included, to pass as a loss's reference set
    (``ref_emb``, ``ref_labels``): each batch is then compared with all training codes (the gradient flows through
    the batch's side only), as in the reference implementations of DPSH and DSH. Rows never written are left out
    (the reference code starts from zeros, which for DPSH only rescales the loss, and for DSH would pull codes
    towards 0). The buffers are part of the module's state, so a training checkpoint holds the memory.
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


def _pair_loss(
    batch: tuple[Tensor, Tensor | None, IndicesTuple | None, Tensor | None, Tensor | None],
    positive: Link,
    negative: Link,
    *,
    pos_margin: float = 0.0,
    neg_margin: float = 0.0,
    squared_distance: bool = False,
    pooled: bool = True,
    reducer: Reducer | str,
    block_size: int | None,
) -> Tensor:
    """The mean pair term: ``positive`` on ``s − m_pos`` and ``negative`` on ``m_neg − s``, with ``s`` the codes'
    dot product (or ``−‖u_i − u_j‖²``), over all pairs together (``pooled``) or each kind on its own."""
    similarity = NegSquaredEuclideanSimilarity() if squared_distance else DotProductSimilarity()
    chosen = get_reducer(reducer, MeanReducer)
    spec = PairLossSpec(positive, negative, similarity, pos_margin, neg_margin, reducer=chosen, pooled=pooled)
    loss: Tensor = evaluate_pairs(spec, *batch, block_size=block_size)
    return loss


def _check_weight(value: float, name: str) -> None:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def dpsh_loss(
    embeddings: Tensor,
    labels: Tensor | None = None,
    indices_tuple: IndicesTuple | None = None,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    quantization_weight: float = 0.1,
    reducer: Reducer | str = MeanReducer(),
    block_size: int | None = None,
) -> Tensor:
    """DPSH pairwise-likelihood loss (Li, Wang, Kang, Feature learning based deep supervised hashing with pairwise
    labels, IJCAI 2016).

        θ_ij = ½ u_i·u_j,   L = mean_{i≠j} [log(1 + e^{θ_ij}) − s_ij θ_ij] + η/K mean_i ‖u_i − sign(u_i)‖²

    ``log(1 + e^θ)`` is computed as ``softplus(θ)`` (no overflow for large ``θ``). The paper sums both terms with
    ``η = 10``; here the pairs are averaged and the quantisation is per bit, so ``η`` (``quantization_weight``)
    is on another scale.
    """
    check_embeddings(embeddings)
    _check_weight(quantization_weight, "quantization_weight")
    batch = (embeddings, labels, indices_tuple, ref_emb, ref_labels)
    # log(1 + e^θ) − θ = softplus(−θ) on a similar pair, softplus(θ) on a dissimilar one: the logistic link
    pairs = _pair_loss(batch, Logistic(0.5), Logistic(0.5), reducer=reducer, block_size=block_size)
    return pairs + quantization_weight * quantization_penalty(embeddings)


def hashnet_loss(
    embeddings: Tensor,
    labels: Tensor | None = None,
    indices_tuple: IndicesTuple | None = None,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    alpha: float | None = None,
    reducer: Reducer | str = MeanReducer(),
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
    check_embeddings(embeddings)
    scale = 10.0 / embeddings.shape[1] if alpha is None else alpha
    if not scale > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    link = 0.5 * Logistic(scale)  # ½ (mean over similar + mean over dissimilar pairs)
    batch = (embeddings, labels, indices_tuple, ref_emb, ref_labels)
    return _pair_loss(batch, link, link, pooled=False, reducer=reducer, block_size=block_size)


def dsh_loss(
    embeddings: Tensor,
    labels: Tensor | None = None,
    indices_tuple: IndicesTuple | None = None,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    margin: float | None = None,
    regularization: float = 0.01,
    reducer: Reducer | str = MeanReducer(),
    block_size: int | None = None,
) -> Tensor:
    """DSH contrastive loss (Liu, Wang, Shan, Chen, Deep supervised hashing for fast image retrieval, CVPR 2016).

        d_ij = ‖u_i − u_j‖²,   L = mean_{i≠j} [½ s_ij d_ij + ½ (1 − s_ij) [m − d_ij]_+] + α mean_i ‖|u_i| − 1‖₁

    with ``m = 2K`` by default (half the largest ``d`` between codes in ``[−1, 1]^K``) and ``α = 0.01``
    (``regularization``), the paper's values.
    """
    check_embeddings(embeddings)
    m = 2.0 * embeddings.shape[1] if margin is None else margin
    if not m > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    _check_weight(regularization, "regularization")
    batch = (embeddings, labels, indices_tuple, ref_emb, ref_labels)
    # with s = −d: ½ d = ½ · Linear(s), and ½ [m − d]_+ = ½ [s + m]_+ = ½ · Hinge on the margin (−m) − s
    pairs = _pair_loss(
        batch,
        0.5 * Linear(),
        0.5 * Hinge(),
        neg_margin=-m,
        squared_distance=True,
        reducer=reducer,
        block_size=block_size,
    )
    return pairs + regularization * embeddings.shape[1] * quantization_penalty(embeddings, power=1)


def ash_loss(
    embeddings: Tensor,
    labels: Tensor | None = None,
    indices_tuple: IndicesTuple | None = None,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    margin: float | None = None,
    quantization_weight: float = 0.1,
    reducer: Reducer | str = MeanReducer(),
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
    check_embeddings(embeddings)
    bits = embeddings.shape[1]
    m = bits / 2.0 if margin is None else margin
    if not 0 < m <= bits:
        raise ValueError(f"margin must be in (0, K] = (0, {bits}] to be reachable, got {margin}")
    _check_weight(quantization_weight, "quantization_weight")
    batch = (embeddings, labels, indices_tuple, ref_emb, ref_labels)
    # ½ D = ¼ (K − s) = ¼ · Linear on s − K; ½ [m − D]_+ = ¼ [s − (K − 2m)]_+ = ¼ · Hinge on (K − 2m) − s
    positive, negative = 0.25 * Linear(), 0.25 * Hinge()
    pairs = _pair_loss(
        batch, positive, negative, pos_margin=bits, neg_margin=bits - 2 * m, reducer=reducer, block_size=block_size
    )
    return pairs + quantization_weight * quantization_penalty(embeddings)


@loss_module(
    dpsh_loss,
    formula="mean_{i≠j}[log(1+e^θ) − s_ij θ], θ = ½u_i·u_j; + η‖u − sign u‖²",
    paper="Li, Wang, Kang. Feature learning based deep supervised hashing with pairwise labels. IJCAI 2016",
    family="hashing",
)
class DPSHLoss(EmbeddingLoss):
    """DPSH: pairwise likelihood ``log(1 + e^θ) − sθ`` with ``θ = ½ u_i·u_j``, plus quantisation. See
    :func:`dpsh_loss`."""


@loss_module(
    hashnet_loss,
    formula="½(mean_{S1} ℓ + mean_{S0} ℓ), ℓ = log(1+e^θ) − s_ij θ, θ = α u_i·u_j",
    paper="Cao, Long, Wang, Yu. HashNet: Deep learning to hash by continuation. ICCV 2017",
    family="hashing",
)
class HashNetLoss(EmbeddingLoss):
    """HashNet: class-balanced pairwise likelihood with ``θ = α u_i·u_j``. See :func:`hashnet_loss`."""


@loss_module(
    dsh_loss,
    formula="mean_{i≠j}[½s d + ½(1−s)[2K − d]_+] + α‖|u| − 1‖₁, d = ‖u_i − u_j‖²",
    paper="Liu, Wang, Shan, Chen. Deep supervised hashing for fast image retrieval. CVPR 2016",
    family="hashing",
)
class DSHLoss(EmbeddingLoss):
    """DSH: contrastive loss on ``‖u_i − u_j‖²`` with margin ``2K`` and an L1 regulariser. See :func:`dsh_loss`."""


@loss_module(
    ash_loss,
    formula="mean_{i≠j}[½s D + ½(1−s)[m − D]_+] + η(|u| − 1)², D = ½(K − u_i·u_j), m ≤ K",
    paper="Fang et al. Attention-based saliency hashing for ophthalmic image retrieval. BIBM 2020",
    family="hashing",
)
class ASHLoss(EmbeddingLoss):
    """ASH: contrastive loss on the relaxed Hamming distance, reachable margin, ``(|u| − 1)²`` quantisation.
    See :func:`ash_loss`."""
