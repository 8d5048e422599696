"""Calibrated ranking for click-through-rate (CTR) prediction: SBCR and the multi-objective baselines.

Inputs are flat impressions: ``logits [n]`` (or ``[n, 2]`` for JRC), binary ``labels [n]`` (click) and, for the
grouped baselines, ``group_ids [n]`` (the request of each impression). All losses are means over impressions
(pointwise parts) or over pairs / requests (ranking parts), as stated in each docstring.

* :func:`self_boosted_pairwise_loss` / :class:`SBCRLoss` (Zhang, Liu, Bao, Yu, Song, CIKM 2024): each impression
  is compared with the *dumped* scores of the other candidates of its request, so batches can be fully shuffled;
  :class:`PiecewiseLinearCalibrator` maps the ranking score monotonically to a calibrated probability.
* :func:`bce_ranknet_loss`: BCE + in-batch RankNet (needs request-grouped batches).
* :func:`jrc_loss`: JRC (Sheng et al., KDD 2023), two logits per impression.
* :func:`rcr_loss`: RCR (Bai et al., CIKM 2023), sigmoid cross-entropy + a ListCE on σ(s).

The ranking parts use the public links: SBCR's pairs against the dumped scores apply
:class:`pairloss.links.Logistic` to an ``[n, M]`` gap matrix (each impression against its own reference list, not
a pair matrix of the batch, so not the builder's engine path); BCE + RankNet calls
:func:`pairloss.losses.ranking.ranknet_loss` (the builder's list form); JRC and RCR are softmaxes over a request.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pairloss._validation import check_floating, check_positive, check_tensor
from pairloss.links import Logistic
from pairloss.losses._lists import PAD, group_to_lists
from pairloss.losses.base import BatchAxis, PairLoss, loss_module, mean_of_active
from pairloss.losses.ranking import ranknet_loss

__all__ = [
    "BCERankNetLoss",
    "JRCLoss",
    "PiecewiseLinearCalibrator",
    "RCRLoss",
    "SBCRLoss",
    "SelfBoostedPairwiseLoss",
    "bce_ranknet_loss",
    "jrc_loss",
    "rcr_loss",
    "sbcr_loss",
    "self_boosted_pairwise_loss",
]


def _check_clicks(logits: Tensor, labels: Tensor, *, logit_dim: int = 1) -> Tensor:
    check_floating(logits, "logits", ndim=logit_dim)
    check_tensor(labels, "labels")
    if labels.shape != logits.shape[:1]:
        raise ValueError(
            f"labels must have one click per row of logits: shape [{logits.shape[0]}], got {tuple(labels.shape)}"
        )
    labels = labels.to(device=logits.device, dtype=logits.dtype)
    if labels.numel() and not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("labels must be binary clicks (0 or 1)")
    return labels


def _check_groups(group_ids: Tensor, n: int) -> Tensor:
    check_tensor(group_ids, "group_ids")
    if group_ids.shape != (n,) or group_ids.is_floating_point() or group_ids.dtype == torch.bool:
        raise ValueError(
            f"group_ids must be a 1-D integer tensor of length {n}, got {group_ids.dtype} {tuple(group_ids.shape)}"
        )
    return group_ids


def self_boosted_pairwise_loss(
    logits: Tensor, labels: Tensor, ref_scores: Tensor, ref_labels: Tensor, *, sigma: float = 1.0
) -> Tensor:
    """Self-boosted pairwise loss of SBCR (Zhang, Liu, Bao, Yu, Song, CIKM 2024), a variant where the paper is silent.

    Impression ``i`` (current logit ``s_i``, click ``y_i``) carries the dumped logits ``s̃_j`` and clicks ``y_j``
    of the ``M`` other candidates of its request, scored by the deployed (older) model (``ref_scores``,
    ``ref_labels`` ``[n, M]``, label ``-1`` marks padding). With ``ℓ(t) = log(1 + e^{−σ t})``:

        L = (1 / |P|) Σ_i [ Σ_{j: y_i > y_j} ℓ(s_i − s̃_j) + Σ_{j: y_j > y_i} ℓ(s̃_j − s_i) ]

    ``|P|`` counts the pairs of the batch (0 pairs give 0). The dumped scores are constants (no gradient), so the
    loss needs no request-grouped batch: each impression brings its own reference list.

    The paper's: each sample is compared with the ranking scores **and labels** that the online model dumped for
    the candidates of the same query, so that samples can be shuffled freely; the deployed model is a few versions
    older than the trained one. Library's choice (the paper's formula could not be read here): the logistic
    (RankNet) link on the gap between the current and the dumped logit, its slope ``σ``, comparing ``i`` with the
    dumped candidates on both sides (``y_j < y_i`` and ``y_j > y_i``), and the mean over the pairs of the batch.
    """
    labels = _check_clicks(logits, labels)
    check_floating(ref_scores, "ref_scores", ndim=2, finite=False)
    check_tensor(ref_labels, "ref_labels")
    if ref_scores.shape[0] != logits.shape[0] or ref_labels.shape != ref_scores.shape:
        raise ValueError(
            f"ref_scores and ref_labels must be [n={logits.shape[0]}, M], got {tuple(ref_scores.shape)} and "
            f"{tuple(ref_labels.shape)}"
        )
    check_positive(sigma, "sigma")
    ref_labels = ref_labels.to(device=logits.device, dtype=logits.dtype)
    valid = ref_labels != -1
    if ref_scores.numel() and not bool(torch.isfinite(ref_scores[valid]).all()):
        raise ValueError("ref_scores contain NaN or infinite values at real (non-padded) candidates")
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    ref = torch.where(valid, ref_scores.detach().to(logits.dtype), zero)
    y = labels[:, None]
    above = valid & (y > ref_labels)  # i should outrank the dumped j
    below = valid & (ref_labels > y)  # the dumped j should outrank i
    gap = logits[:, None] - ref
    link = Logistic(sigma)
    losses = torch.where(above, link(gap), zero) + torch.where(below, link(-gap), zero)
    return mean_of_active(losses.sum(), (above.sum() + below.sum()).to(logits.dtype))


#: The dumped reference lists ``[n, M]`` of impressions on different ranks are padded to the longest (label ``-1``).
REFERENCE_LIST_AXES = {"ref_scores": BatchAxis(pad=0.0), "ref_labels": BatchAxis(pad=PAD)}


class PiecewiseLinearCalibrator(nn.Module):
    """SBCR's calibration module: a monotone piecewise-linear map ``g(ŷ; x)`` of the ranking probability ``ŷ``.

    The unit interval is cut into ``K`` bins by edges ``0 = e_0 < e_1 < … < e_K = 1``. For each sample,
    ``a = softmax(MLP(x))`` gives the height of each bin, their cumulative sums ``b_k = Σ_{i ≤ k} a_i``
    (``b_0 = 0``, ``b_K = 1``) the calibrated value at each edge, and inside a bin the map interpolates linearly:

        g(ŷ; x) = b_{k−1} + a_k · (ŷ − e_{k−1}) / (e_k − e_{k−1}),     ŷ ∈ [e_{k−1}, e_k]

    ``g`` is strictly increasing in ``ŷ`` for every ``x``, so when ``x`` holds request-level features only (the same
    for all candidates of a request) the order inside a request is kept exactly.

    The paper's: a query-dependent, monotone, piecewise-linear function ``g(ŷ; q)`` of the predicted probability,
    parameterised through a Softmax over its intervals, that separates calibration from ranking. Library's choice:
    the features ``x`` (request-level features here), the MLP, the number of bins and their edges (equal width by
    default; pass quantiles of the expected ``ŷ`` to spend the bins where the predictions are), the start at the
    identity map (the last layer starts at zero weights and bias ``log(e_k − e_{k−1})``, so ``g(ŷ; x) = ŷ``), and
    stopping the gradient at ``ŷ`` and ``x`` (the calibration loss never changes the ranking head).
    """

    def __init__(self, context_features: int, n_bins: int = 16, hidden: int = 32, edges: Tensor | None = None) -> None:
        super().__init__()
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        if edges is None:
            edges = torch.linspace(0.0, 1.0, n_bins + 1)
        edges = torch.as_tensor(edges, dtype=torch.float32)
        if edges.shape != (n_bins + 1,) or edges[0] != 0 or edges[-1] != 1 or not bool((edges.diff() > 0).all()):
            raise ValueError(f"edges must be {n_bins + 1} strictly increasing values from 0 to 1")
        self.register_buffer("edges", edges)
        last = nn.Linear(hidden, n_bins)
        with torch.no_grad():  # start from the identity map: a_k = e_k − e_{k−1} for every x
            last.weight.zero_()
            last.bias.copy_(torch.log(edges.diff()))
        self.net = nn.Sequential(nn.Linear(context_features, hidden), nn.ReLU(), last)
        self.n_bins = n_bins

    def forward(self, probs: Tensor, context: Tensor) -> Tensor:
        check_floating(probs, "probs", ndim=1)
        check_floating(context, "context", ndim=2)
        if context.shape[0] != probs.shape[0]:
            raise ValueError(f"context has {context.shape[0]} rows but there are {probs.shape[0]} probabilities")
        probs = probs.detach().clamp(0.0, 1.0)
        heights = torch.softmax(self.net(context.detach()), dim=-1)
        knots = F.pad(torch.cumsum(heights, dim=-1), (1, 0))
        edges = self.get_buffer("edges").to(probs.dtype)
        k = torch.clamp(torch.searchsorted(edges, probs, right=True), 1, self.n_bins)
        left, right = edges[k - 1], edges[k]
        base = knots.gather(1, (k - 1)[:, None]).squeeze(1)
        height = heights.gather(1, (k - 1)[:, None]).squeeze(1)
        return base + height * (probs - left) / (right - left)


def sbcr_loss(
    logits: Tensor,
    labels: Tensor,
    ref_scores: Tensor,
    ref_labels: Tensor,
    calibrated: Tensor,
    *,
    alpha: float = 1.0,
    sigma: float = 1.0,
    eps: float = 1e-7,
) -> Tensor:
    """SBCR's training loss: ranking head and calibration module, decoupled.

        L = BCE(σ(s), y) + α · L_SB(s; s̃, ỹ) + BCE(g(σ(s)^{sg}; x), y)

    ``L_SB`` is :func:`self_boosted_pairwise_loss`; ``calibrated`` is the output of
    :class:`PiecewiseLinearCalibrator` (clipped to ``[eps, 1 − eps]`` for the log). The paper's: the ranking module
    is trained with a pointwise and the self-boosted pairwise loss, the calibration module with a calibration
    objective on its own output. Library's choice: BCE for both pointwise terms, the weight ``α`` on the pairwise
    term only, and the unweighted sum of the three.
    """
    labels = _check_clicks(logits, labels)
    check_floating(calibrated, "calibrated", ndim=1)
    if calibrated.shape != logits.shape:
        raise ValueError(f"calibrated must have shape {tuple(logits.shape)}, got {tuple(calibrated.shape)}")
    check_positive(alpha, "alpha", allow_zero=True)
    pointwise = F.binary_cross_entropy_with_logits(logits, labels) if logits.numel() else logits.sum()
    ranking = self_boosted_pairwise_loss(logits, labels, ref_scores, ref_labels, sigma=sigma)
    cal = F.binary_cross_entropy(calibrated.clamp(eps, 1 - eps), labels) if logits.numel() else logits.sum()
    return pointwise + alpha * ranking + cal


def bce_ranknet_loss(
    logits: Tensor, labels: Tensor, group_ids: Tensor, *, alpha: float = 1.0, sigma: float = 1.0
) -> Tensor:
    """Multi-objective baseline: ``L = BCE(σ(s), y) + α · RankNet(s, y; requests of the batch)``.

    RankNet is :func:`pairloss.losses.ranking.ranknet_loss` (mean over the clicked/non-clicked pairs of each
    request present in the batch), so batches must hold whole requests.
    """
    labels = _check_clicks(logits, labels)
    group_ids = _check_groups(group_ids, logits.shape[0])
    check_positive(alpha, "alpha", allow_zero=True)
    pointwise = F.binary_cross_entropy_with_logits(logits, labels) if logits.numel() else logits.sum()
    return pointwise + alpha * ranknet_loss(logits, labels, group_ids, sigma=sigma)


def jrc_loss(logits: Tensor, labels: Tensor, group_ids: Tensor, *, alpha: float = 0.5) -> Tensor:
    """JRC, joint optimisation of ranking and calibration (Sheng et al., KDD 2023).

    Two logits ``(f⁰_i, f¹_i)`` per impression; the click probability is ``p_i = σ(f¹_i − f⁰_i)``. With ``R(i)`` the
    request of ``i``:

        L_calib = −mean_i [ y_i log p_i + (1 − y_i) log(1 − p_i) ]
        L_rank  = −mean_i [ y_i log softmax_{R(i)}(f¹)_i + (1 − y_i) log softmax_{R(i)}(f⁰)_i ]
        L = α L_calib + (1 − α) L_rank

    where ``softmax_{R}(f)_i = e^{f_i} / Σ_{j ∈ R} e^{f_j}`` runs over the impressions of the same request in the batch.
    """
    labels = _check_clicks(logits, labels, logit_dim=2)
    if logits.shape[1] != 2:
        raise ValueError(f"JRC needs two logits per impression, got shape {tuple(logits.shape)}")
    group_ids = _check_groups(group_ids, logits.shape[0])
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if logits.shape[0] == 0:
        return logits.sum()
    calib = F.binary_cross_entropy_with_logits(logits[:, 1] - logits[:, 0], labels)
    _, inverse = torch.unique(group_ids, return_inverse=True)
    n_groups = int(inverse.max()) + 1
    log_z = torch.stack(
        [
            torch.full((n_groups,), -torch.inf, dtype=logits.dtype, device=logits.device).scatter_reduce(
                0, inverse, logits[:, c], reduce="amax"
            )
            for c in (0, 1)
        ],
        dim=1,
    ).detach()
    shifted = torch.exp(logits - log_z[inverse])
    sums = torch.zeros(n_groups, 2, dtype=logits.dtype, device=logits.device).index_add(0, inverse, shifted)
    log_softmax = logits - log_z[inverse] - torch.log(sums[inverse])
    rank = -(labels * log_softmax[:, 1] + (1 - labels) * log_softmax[:, 0]).mean()
    return alpha * calib + (1 - alpha) * rank


def rcr_loss(logits: Tensor, labels: Tensor, group_ids: Tensor, *, alpha: float = 0.5) -> Tensor:
    """RCR, regression-compatible ranking (Bai et al., CIKM 2023): sigmoid CE + a ListCE on ``σ(s)``.

        L_SigmoidCE = −mean_i [ y_i log σ(s_i) + (1 − y_i) log(1 − σ(s_i)) ]
        L_ListCE    = mean_{requests with a click} − Σ_i (y_i / Σ_j y_j) · log( σ(s_i) / Σ_j σ(s_j) )
        L = (1 − α) L_SigmoidCE + α L_ListCE

    Using ``σ(s)`` instead of ``e^s`` inside the softmax makes the two objectives share their minimiser
    ``σ(s_i) = E[y_i]``, hence "regression compatible".
    """
    labels = _check_clicks(logits, labels)
    group_ids = _check_groups(group_ids, logits.shape[0])
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if logits.shape[0] == 0:
        return logits.sum()
    pointwise = F.binary_cross_entropy_with_logits(logits, labels)
    log_sig, y, _ = group_to_lists(F.logsigmoid(logits), labels, group_ids)
    valid = y != -1
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    y = torch.where(valid, y, zero)
    masked = torch.where(valid, log_sig, torch.full((), torch.finfo(logits.dtype).min / 4, dtype=logits.dtype))
    log_p = log_sig - torch.logsumexp(masked, dim=-1, keepdim=True)
    clicks = y.sum(-1)
    per_list = -(torch.where(valid, y * log_p, zero)).sum(-1) / clicks.clamp_min(1.0)
    has = clicks > 0
    listwise = mean_of_active(torch.where(has, per_list, zero).sum(), has.sum().to(logits.dtype))
    return (1 - alpha) * pointwise + alpha * listwise


@loss_module(
    self_boosted_pairwise_loss,
    formula="mean_P ℓ(s_i − s̃_j) [y_i>y_j] + ℓ(s̃_j − s_i) [y_j>y_i], s̃ dumped by an older model",
    paper="Zhang, Liu, Bao, Yu, Song. A self-boosted framework for calibrated ranking. CIKM 2024",
    family="calibrated",
)
class SelfBoostedPairwiseLoss(PairLoss):
    """SBCR's self-boosted pairwise loss; ``loss(logits, labels, ref_scores, ref_labels)``, see
    :func:`self_boosted_pairwise_loss`.
    """

    batch_axes = REFERENCE_LIST_AXES


@loss_module(
    sbcr_loss,
    formula="BCE(σ(s), y) + α L_SB(s; s̃) + BCE(g(σ(s)^sg; x), y), g monotone piecewise linear",
    paper="Zhang, Liu, Bao, Yu, Song. A self-boosted framework for calibrated ranking. CIKM 2024",
    family="calibrated",
)
class SBCRLoss(PairLoss):
    """SBCR: ``loss(logits, labels, ref_scores, ref_labels, calibrated)``; see :func:`sbcr_loss`."""

    batch_axes = REFERENCE_LIST_AXES

    def __init__(self, alpha: float = 1.0, sigma: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha
        self.sigma = sigma

    def forward(
        self, logits: Tensor, labels: Tensor, ref_scores: Tensor, ref_labels: Tensor, calibrated: Tensor
    ) -> Tensor:
        return sbcr_loss(logits, labels, ref_scores, ref_labels, calibrated, alpha=self.alpha, sigma=self.sigma)


@loss_module(
    bce_ranknet_loss,
    formula="BCE(σ(s), y) + α mean_{same request, y_i>y_j} log(1 + exp(−σ(s_i − s_j)))",
    paper="Sculley. Combined regression and ranking. KDD 2010",
    family="calibrated",
)
class BCERankNetLoss(PairLoss):
    """BCE + in-batch RankNet; ``loss(logits, labels, group_ids)``, see :func:`bce_ranknet_loss`."""


@loss_module(
    jrc_loss,
    formula="α BCE(σ(f¹−f⁰), y) − (1−α) mean_i [y_i log softmax_R(f¹)_i + (1−y_i) log softmax_R(f⁰)_i]",
    paper="Sheng et al. Joint optimization of ranking and calibration with contextualized hybrid model. KDD 2023",
    family="calibrated",
)
class JRCLoss(PairLoss):
    """JRC; ``loss(logits [n, 2], labels, group_ids)``, see :func:`jrc_loss`."""


@loss_module(
    rcr_loss,
    formula="(1−α) BCE(σ(s), y) + α mean_R −Σ_i (y_i/Σy) log(σ(s_i)/Σ_j σ(s_j))",
    paper="Bai et al. Regression compatible listwise objectives for calibrated ranking with binary relevance. "
    "CIKM 2023",
    family="calibrated",
)
class RCRLoss(PairLoss):
    """RCR; ``loss(logits, labels, group_ids)``, see :func:`rcr_loss`."""
