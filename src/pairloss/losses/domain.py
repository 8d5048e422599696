"""A pairwise loss for sim-to-real transfer on paired (simulated, real) embeddings of the same scene states.

Viereck, Saenko, Platt. *Adapting control policies from simulation to reality using a pairwise loss.*
arXiv 1807.10413, 2018. A policy trained on plentiful simulated images is made to work on real images by adding,
on a few pairs of a simulated and a real image of the same scene state, a loss that pulls the two embeddings
together and pushes the embeddings of unpaired images apart.

The paper's abstract says only that the loss is pairwise, on (simulated, real) pairs of the same state; its full
text was not available, so the form is the library's choice: the contrastive loss of Hadsell, Chopra and LeCun
(CVPR 2006) across domains, with distance ``d_ij = ‖s_i − r_j‖`` between simulated embedding ``s_i`` and real
embedding ``r_j``:

    L = (1/P) Σ_i d_ii²  +  w · 1/(P(P − 1)) Σ_{i ≠ j} [m − d_ij]_+²

True pairs (same state) are pulled together without a margin; non-pairs are pushed beyond the margin ``m`` and
no further, so the push cannot blow the embedding up and pairs of nearly-identical states are not forced far
apart (an InfoNCE push would keep separating them). ``w = 0`` keeps the pull alone. The batch is the ``P × P``
cross-domain matrix, small (a few hundred pairs at most), so it is computed densely with autograd rather than by
:func:`pairloss.pair_loss`'s blocked engine path (at that size one dense expression is the fast one, and the
positive term is the squared distance itself, whose gradient stays finite at ``d = 0``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pairloss._validation import check_embeddings, check_positive
from pairloss.losses.base import PairLoss, loss_module

__all__ = ["SimRealPairLoss", "sim_real_pair_loss"]


def sim_real_pair_loss(
    sim_embeddings: Tensor,
    real_embeddings: Tensor,
    *,
    margin: float = 1.0,
    negative_weight: float = 1.0,
) -> Tensor:
    """Cross-domain contrastive loss on paired embeddings: row ``i`` of both inputs shows the same scene state.

        L = (1/P) Σ_i ‖s_i − r_i‖²  +  w · 1/(P(P − 1)) Σ_{i ≠ j} [m − ‖s_i − r_j‖]_+²

    Viereck, Saenko, Platt, 2018 (pairwise sim-to-real loss); Hadsell, Chopra, LeCun, CVPR 2006 (the form). With
    one pair (``P = 1``) there is no non-pair and the second term is 0.
    """
    check_embeddings(sim_embeddings, "sim_embeddings")
    check_embeddings(real_embeddings, "real_embeddings")
    if sim_embeddings.shape != real_embeddings.shape:
        raise ValueError(
            f"sim_embeddings {tuple(sim_embeddings.shape)} and real_embeddings {tuple(real_embeddings.shape)} must"
            " have the same shape (row i of both is one scene state)"
        )
    if sim_embeddings.dtype != real_embeddings.dtype:
        raise ValueError(f"dtypes differ: {sim_embeddings.dtype} vs {real_embeddings.dtype}")
    check_positive(margin, "margin")
    check_positive(negative_weight, "negative_weight", allow_zero=True)
    p = sim_embeddings.shape[0]
    positive = (sim_embeddings - real_embeddings).pow(2).sum(dim=1).mean()
    if p == 1:
        return positive
    # Squared distances through the difference (not the Gram trick): exact, and differentiable at d = 0 away
    # from the diagonal; the square root only sees entries clamped away from 0 (inactive hinges there anyway).
    squared = (sim_embeddings[:, None, :] - real_embeddings[None, :, :]).pow(2).sum(dim=2)
    off_diagonal = ~torch.eye(p, dtype=torch.bool, device=sim_embeddings.device)
    distance = squared.clamp_min(1e-12).sqrt()
    hinge = torch.where(off_diagonal, (margin - distance).clamp_min(0), torch.zeros_like(distance))
    return positive + negative_weight * hinge.pow(2).sum() / (p * (p - 1))


def _check_options(margin: float = 1.0, negative_weight: float = 1.0, **_: object) -> None:
    check_positive(margin, "margin")
    check_positive(negative_weight, "negative_weight", allow_zero=True)


@loss_module(
    sim_real_pair_loss,
    formula="(1/P) Σ_i ‖s_i − r_i‖² + w/(P(P−1)) Σ_{i≠j} [m − ‖s_i − r_j‖]_+²",
    paper="Viereck, Saenko, Platt. Adapting control policies from simulation to reality using a pairwise loss. 2018",
    family="domain",
    check=_check_options,
)
class SimRealPairLoss(PairLoss):
    """Pull (simulated, real) embeddings of the same state together, push unpaired ones beyond a margin.

    Called as ``loss(sim_embeddings [P, D], real_embeddings [P, D])``. See :func:`sim_real_pair_loss`.
    """
