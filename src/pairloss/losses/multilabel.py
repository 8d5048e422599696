"""Multi-label ranking losses: pairs of (relevant, irrelevant) labels inside one sample.

Scores ``f [B, c]`` and multi-hot labels ``Y [B, c]``; for row ``i``, ``Y⁺`` are its relevant labels and ``Y⁻`` the
others. With a margin link ``φ`` (logistic ``log(1 + e^{−z})``, hinge ``[1 − z]_+`` or exponential ``e^{−z}``):

* pairwise surrogate ``L_pa = 1/(|Y⁺||Y⁻|) Σ_{p∈Y⁺} Σ_{q∈Y⁻} φ(f_p − f_q)``;
* univariate surrogates ``L_u = Σ_j C_j φ(y_j f_j)`` with ``y_j = ±1`` and the weightings of Wu et al.:
  ``u1``: ``C_j = 1/c``; ``u2``: ``C_j = 1/(|Y⁺||Y⁻|)``; ``u3`` (the reweighted loss): ``C_j = 1/|Y⁺|`` on
  relevant and ``1/|Y⁻|`` on irrelevant labels; ``u4``: ``C_j = 1/min(|Y⁺|, |Y⁻|)``.

Wu, Li, Xu, Zhu. Rethinking and Reweighting the Univariate Losses for Multi-Label Ranking: Consistency and
Generalization. NeurIPS 2021.

The weightings are those of the authors' code (``calculate_cost_matrix``): rows without a relevant or without an
irrelevant label have no label pair and contribute 0 to the pairwise loss and to ``u2``–``u4``, while ``u1`` (the
plain univariate loss of Dembczyński et al., ICML 2012, which is not a ranking loss of pairs) keeps them with
``C_j = 1/c``. The batch reduction is the mean over all ``B`` rows, as in the paper's empirical risk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from pairloss import memory
from pairloss._validation import check_choice, check_floating, check_positive
from pairloss.links import Exponential, Hinge, Link, Logistic
from pairloss.losses.base import PairLoss, loss_module

__all__ = [
    "LINKS",
    "WEIGHTINGS",
    "MultiLabelPairwiseLoss",
    "MultiLabelUnivariateLoss",
    "multilabel_pairwise_loss",
    "multilabel_univariate_loss",
]

#: Margin links ``φ(z)``, decreasing in the margin ``z``, by name (the public links of :mod:`pairloss.links`).
LINKS = ("logistic", "hinge", "exponential")
#: Univariate weightings of Wu et al. (NeurIPS 2021).
WEIGHTINGS = ("u1", "u2", "u3", "u4")

#: ``[B, k, c]`` temporaries one chunk of label-pair margins holds at once.
_PAIR_COPIES = 4


def _link(name: str) -> Link:
    """The paper's links: ``log(1 + e^{−z})``, ``[1 − z]_+`` (subgradient 0 at the kink) and ``e^{−z}``."""
    check_choice(name, "link", LINKS)
    return {"logistic": Logistic(), "hinge": Hinge(1.0), "exponential": Exponential()}[name]


def _check_scores_labels(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    check_floating(scores, "scores", ndim=2)
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.shape != scores.shape:
        raise ValueError(
            f"labels must be multi-hot with the shape of scores {tuple(scores.shape)}, got {tuple(labels.shape)}"
        )
    if labels.is_complex():
        raise ValueError(f"labels must be 0/1 (bool, integer or float), got dtype {labels.dtype}")
    if labels.numel() > 0 and not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("labels must contain only 0 and 1")
    return scores, labels.to(device=scores.device, dtype=scores.dtype)


def _row_counts(y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``|Y⁺|``, ``|Y⁻|`` per row and the mask of rows that have both."""
    n_pos = y.sum(1)
    n_neg = y.shape[1] - n_pos
    return n_pos, n_neg, (n_pos > 0) & (n_neg > 0)


def multilabel_univariate_loss(
    scores: Tensor, labels: Tensor, *, weighting: str = "u3", link: str = "logistic"
) -> Tensor:
    """Univariate multi-label ranking surrogate ``L = mean_i Σ_j C_ij φ(y_ij f_ij)`` (Wu et al., NeurIPS 2021).

    ``y_ij = +1`` for a relevant and ``−1`` for an irrelevant label, and ``C`` is one of the paper's weightings:
    ``u1``: ``1/c``; ``u2``: ``1/(|Y⁺||Y⁻|)``; ``u3`` (reweighted): ``1/|Y⁺|`` on relevant, ``1/|Y⁻|`` on
    irrelevant labels; ``u4``: ``1/min(|Y⁺|, |Y⁻|)``. It costs ``O(c)`` per sample. Rows with no relevant or no
    irrelevant label contribute 0 to ``u2``–``u4`` and ``(1/c) Σ_j φ(y_ij f_ij)`` to ``u1`` (as in the authors'
    code: ``u1`` is the plain univariate loss, defined on every row).

    Args:
        scores: ``[B, c]`` real-valued label scores.
        labels: ``[B, c]`` multi-hot relevance (bool, integer or float 0/1).
        weighting: ``"u1"``, ``"u2"``, ``"u3"`` or ``"u4"``.
        link: ``"logistic"``, ``"hinge"`` or ``"exponential"``.
    """
    check_choice(weighting, "weighting", WEIGHTINGS)
    phi = _link(link)
    scores, y = _check_scores_labels(scores, labels)
    if scores.shape[0] == 0:
        return scores.sum() * 0
    n_pos, n_neg, valid = _row_counts(y)
    one = torch.ones_like(n_pos)
    if weighting == "u1":
        weight = torch.full_like(y, 1.0 / scores.shape[1])
    elif weighting == "u2":
        weight = (1 / torch.where(valid, n_pos * n_neg, one))[:, None].expand_as(y)
    elif weighting == "u3":
        weight = torch.where(
            y > 0, 1 / torch.where(valid, n_pos, one)[:, None], 1 / torch.where(valid, n_neg, one)[:, None]
        )
    else:
        weight = (1 / torch.where(valid, torch.minimum(n_pos, n_neg), one))[:, None].expand_as(y)
    margins = (2 * y - 1) * scores
    per_row = (weight * phi.value(margins)).sum(1)
    if weighting != "u1":
        per_row = torch.where(valid, per_row, torch.zeros_like(n_pos))
    return per_row.mean()


class _PairwiseRanking(torch.autograd.Function):
    """``Σ_i w_i Σ_{p∈Y⁺_i, q∈Y⁻_i} φ(f_ip − f_iq)``, iterating over the smaller side of each row's label pairs.

    The anchors are the relevant labels when the largest ``|Y⁺|`` of the batch is at most the largest ``|Y⁻|``
    (the usual, sparse case), otherwise the irrelevant ones. The anchors' scores are gathered into ``[B, A]``
    (``A`` = the largest anchor count, padded) and compared with all ``c`` scores ``k`` anchor columns at a time,
    ``[B, k, c]``, so the cost is ``O(B·A·c)``, not ``O(B·c²)``. Each chunk's gradient is formed from the link's
    derivative ``φ'`` in the forward pass; the backward only scales it.
    """

    @staticmethod
    def forward(ctx: Any, scores: Tensor, y: Tensor, row_weight: Tensor, link: Link, chunk: int | None) -> Tensor:
        n_pos = y.sum(1)
        n_neg = y.shape[1] - n_pos
        anchor_is_positive = bool(n_pos.max() <= n_neg.max())
        sign = 1.0 if anchor_is_positive else -1.0
        anchor_mask = y if anchor_is_positive else 1 - y
        width = max(1, int(anchor_mask.sum(1).max()))
        index = torch.argsort(anchor_mask, dim=1, descending=True, stable=True)[:, :width]
        if chunk is None:
            row_bytes = scores.shape[0] * scores.shape[1] * scores.element_size()
            chunk = memory.rows_per_block(width, row_bytes, _PAIR_COPIES, max_temporary=memory.MAX_TEMPORARY_BYTES)
        total = scores.new_zeros((), dtype=torch.float64)
        grad = torch.zeros_like(scores)
        grad_anchor = torch.zeros(index.shape, dtype=scores.dtype, device=scores.device)
        start = 0
        for margins, weight in _pair_chunks(scores, y, row_weight, index, sign, anchor_is_positive, chunk):
            value, derivative = link.value_and_derivative(margins)
            total = total + (weight * value).sum().to(torch.float64)
            d = derivative.mul_(weight).mul_(sign)
            grad_anchor[:, start : start + margins.shape[1]] += d.sum(2)
            grad -= d.sum(1)
            start += margins.shape[1]
        grad.scatter_add_(1, index, grad_anchor)
        ctx.save_for_backward(grad)
        return total.to(scores.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        return grad * grad_output, None, None, None, None


def _pair_chunks(
    scores: Tensor, y: Tensor, row_weight: Tensor, index: Tensor, sign: float, anchor_is_positive: bool, chunk: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """``(margins, weights)`` blocks ``[B, k, c]``: ``f_p − f_q`` and ``w_i`` on valid (relevant, irrelevant) pairs."""
    others = 1 - y if anchor_is_positive else y
    anchor_scores = scores.gather(1, index)
    anchor_valid = (y.gather(1, index) > 0) if anchor_is_positive else (y.gather(1, index) == 0)
    for start in range(0, index.shape[1], chunk):
        stop = min(start + chunk, index.shape[1])
        margins = sign * (anchor_scores[:, start:stop, None] - scores[:, None, :])
        valid = anchor_valid[:, start:stop, None].to(scores.dtype) * others[:, None, :]
        yield margins, row_weight[:, None, None] * valid


def multilabel_pairwise_loss(
    scores: Tensor, labels: Tensor, *, link: str = "logistic", chunk_size: int | None = None
) -> Tensor:
    """Pairwise multi-label ranking surrogate (Wu et al., NeurIPS 2021), averaged over the ``B`` rows.

        L_pa = mean_i 1/(|Y⁺_i||Y⁻_i|) Σ_{p∈Y⁺_i} Σ_{q∈Y⁻_i} φ(f_ip − f_iq)

    It never holds a ``[B, c, c]`` tensor: each row's relevant labels (or its irrelevant ones, whichever side is
    smaller in the batch) are gathered into ``[B, A]`` and compared with all ``c`` scores ``chunk_size`` anchors at
    a time (``[B, chunk_size, c]``; from the memory budget of :mod:`pairloss.memory` when ``None``), so the cost is
    ``O(B·A·c)``: ``O(c²)`` per sample at worst, ``O(|Y⁺|·c)`` for sparse labels. The gradient is formed from the
    link's derivative ``φ'`` (:mod:`pairloss.links`) in the same pass, so no chunk is kept for autograd or
    recomputed. Rows with no relevant or no irrelevant label contribute 0.

    Args:
        scores: ``[B, c]`` real-valued label scores.
        labels: ``[B, c]`` multi-hot relevance (bool, integer or float 0/1).
        link: ``"logistic"``, ``"hinge"`` or ``"exponential"``.
        chunk_size: anchor labels per chunk.
    """
    phi = _link(link)
    scores, y = _check_scores_labels(scores, labels)
    batch, c = scores.shape
    if batch == 0 or c == 0:
        return scores.sum() * 0
    if chunk_size is not None:
        check_positive(chunk_size, "chunk_size")
    n_pos, n_neg, valid = _row_counts(y)
    row_weight = torch.where(valid, 1 / torch.where(valid, n_pos * n_neg, torch.ones_like(n_pos)), 0 * n_pos)
    total: Tensor = _PairwiseRanking.apply(scores, y, row_weight, phi, None if chunk_size is None else int(chunk_size))
    return total / batch


def _check_link(link: str = "logistic", weighting: str = "u3", **_: object) -> None:
    check_choice(link, "link", LINKS)
    check_choice(weighting, "weighting", WEIGHTINGS)


@loss_module(
    multilabel_pairwise_loss,
    formula="mean_i 1/(|Y⁺||Y⁻|) Σ_{p∈Y⁺} Σ_{q∈Y⁻} φ(f_p − f_q)",
    paper="Wu, Li, Xu, Zhu. Rethinking and Reweighting the Univariate Losses for Multi-Label Ranking. NeurIPS 2021",
    family="multilabel",
    check=_check_link,
)
class MultiLabelPairwiseLoss(PairLoss):
    """Pairwise multi-label ranking loss: every (relevant, irrelevant) label pair of a sample, ``O(c²)``.

    See :func:`multilabel_pairwise_loss`. Call it as ``loss(scores [B, c], labels [B, c])``.
    """


@loss_module(
    multilabel_univariate_loss,
    formula="mean_i Σ_j C_j φ(y_j f_j), u3: C = 1/|Y⁺| on Y⁺, 1/|Y⁻| on Y⁻",
    paper="Wu, Li, Xu, Zhu. Rethinking and Reweighting the Univariate Losses for Multi-Label Ranking. NeurIPS 2021",
    family="multilabel",
    check=_check_link,
)
class MultiLabelUnivariateLoss(PairLoss):
    """Univariate multi-label ranking loss with weighting ``u1``–``u4``; ``u3`` is the reweighted loss, ``O(c)``.

    See :func:`multilabel_univariate_loss`. Call it as ``loss(scores [B, c], labels [B, c])``.
    """
