"""Proxy and classification losses: each class owns a learnable vector; samples are scored against classes.

Class names, constructor arguments (``num_classes, embedding_size, ...``), parameter names (``proxies``
``[C, D]`` or ``W`` ``[D, C]``), initialisations and defaults follow pytorch-metric-learning (PML) 2.x, so a
PML state dict loads unchanged and the default value equals PML's on the same input and weights. The score
matrix is ``N × C`` (samples × classes): small, so it is computed densely, in O(N·C) memory, without the row
engine, and these losses are not built by :func:`pairloss.pair_loss` (there is no ``N × N`` pair matrix to
bound; dense autograd on ``N × C`` is the fast path). Labels must be 1-D class ids in ``[0, num_classes)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pairloss._validation import check_class_shape, check_embeddings, check_floating, check_labels, check_positive
from pairloss.losses.base import EmbeddingLoss, loss_module
from pairloss.reducers import DoNothingReducer, MeanReducer, Reducer, get_reducer
from pairloss.similarity import BaseSimilarity, CosineSimilarity, DotProductSimilarity, LpDistance

__all__ = [
    "ArcFaceLoss",
    "CosFaceLoss",
    "NormalizedSoftmaxLoss",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "arcface_loss",
    "cosface_loss",
    "normalized_softmax_loss",
    "proxy_anchor_loss",
    "proxy_nca_loss",
]


def _reduced(losses: Tensor, reducer: Reducer | str) -> Any:
    """The per-sample losses reduced by ``reducer`` (PML's loss dictionary for ``"none"``)."""
    chosen = get_reducer(reducer, MeanReducer)
    if isinstance(chosen, DoNothingReducer):
        indices = torch.arange(losses.shape[0], device=losses.device)
        return {"loss": {"losses": losses, "indices": indices, "reduction_type": "element"}}
    return chosen.reduce(losses)


def _check_proxy_inputs(embeddings: Tensor, labels: Tensor, weights: Tensor, class_dim: int, name: str) -> Tensor:
    """Validate embeddings ``[N, D]``, class ids ``[N]`` in ``[0, C)`` and class weights; return labels."""
    check_embeddings(embeddings)
    labels = check_labels(labels, embeddings.shape[0], device=embeddings.device)
    if labels.ndim != 1:
        raise ValueError("proxy losses need 1-D class ids, got multi-hot labels")
    check_floating(weights, name, ndim=2)
    n_classes = weights.shape[class_dim]
    embedding_dim = weights.shape[1 - class_dim]
    if embedding_dim != embeddings.shape[1]:
        raise ValueError(f"{name} has embedding size {embedding_dim} but embeddings have {embeddings.shape[1]}")
    if labels.numel() > 0 and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}) (num_classes), got [{labels.min()}, {labels.max()}]")
    return labels.long()


def _class_logsumexp(x: Tensor, mask: Tensor) -> Tensor:
    """Per column ``log(1 + Σ_{i ∈ mask} exp(x_i))`` (PML's ``logsumexp(add_one=True, dim=0)``)."""
    masked = x.masked_fill(~mask, float("-inf"))
    shift = masked.amax(dim=0, keepdim=True).detach().clamp_min(0)
    total = torch.exp(masked - shift).sum(dim=0) + torch.exp(-shift.squeeze(0))
    return shift.squeeze(0) + torch.log(total)


def proxy_anchor_loss(
    embeddings: Tensor,
    labels: Tensor,
    proxies: Tensor,
    *,
    margin: float = 0.1,
    alpha: float = 32.0,
    distance: BaseSimilarity | None = None,
) -> Tensor:
    """Proxy-Anchor loss (Kim, Kim, Cho, Kwak, CVPR 2020), PML's ``ProxyAnchorLoss``.

    With proxies ``p_c`` (``[C, D]``), cosine similarities ``s(x, p)``, ``X_c^+`` the samples of class c,
    ``X_c^−`` the others and ``P^+`` the classes present in the batch:

        L = (1/|P+|) Σ_{c ∈ P+} log(1 + Σ_{x ∈ X_c+} exp(−α (s(x, p_c) − δ)))
            + (1/C) Σ_c log(1 + Σ_{x ∈ X_c−} exp(α (s(x, p_c) + δ)))
    """
    labels = _check_proxy_inputs(embeddings, labels, proxies, 0, "proxies")
    distance = distance if distance is not None else CosineSimilarity()
    scores = distance(embeddings, proxies.to(embeddings.dtype))
    n_classes = proxies.shape[0]
    positive = F.one_hot(labels, n_classes).bool()
    pos_exp = distance.margin(scores, margin) * alpha
    neg_exp = distance.margin(-margin, scores) * alpha
    pos_term = _class_logsumexp(pos_exp, positive).sum() / positive.any(dim=0).sum().clamp_min(1)
    neg_term = _class_logsumexp(neg_exp, ~positive).sum() / n_classes
    return pos_term + neg_term


@loss_module(
    proxy_anchor_loss,
    formula="1/|P+| Σ_c log(1+Σ_{X+} e^{−α(s−δ)}) + 1/C Σ_c log(1+Σ_{X−} e^{α(s+δ)})",
    paper="Kim, Kim, Cho, Kwak. Proxy anchor loss for deep metric learning. CVPR 2020",
    family="proxy",
)
class ProxyAnchorLoss(EmbeddingLoss):
    """Proxy-Anchor loss: each proxy is an anchor against the whole batch. See :func:`proxy_anchor_loss`.

    ``proxies`` is an ``nn.Parameter`` ``[num_classes, embedding_size]`` (Kaiming-normal, fan-out, as in PML).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 0.1,
        alpha: float = 32.0,
        distance: BaseSimilarity | None = None,
    ) -> None:
        super().__init__()
        check_class_shape(num_classes, embedding_size)
        self.num_classes = num_classes
        self.margin = margin
        self.alpha = alpha
        self.distance = distance if distance is not None else CosineSimilarity()
        self.proxies = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return proxy_anchor_loss(
            embeddings, labels, self.proxies, margin=self.margin, alpha=self.alpha, distance=self.distance
        )


def proxy_nca_loss(
    embeddings: Tensor,
    labels: Tensor,
    proxies: Tensor,
    *,
    softmax_scale: float = 1.0,
    distance: BaseSimilarity | None = None,
    reducer: Reducer | str = MeanReducer(),
) -> Any:
    """ProxyNCA loss (Movshovitz-Attias et al., ICCV 2017), PML's ``ProxyNCALoss``.

    With proxies ``p_c`` and the squared Euclidean distance between L2-normalised vectors (PML's
    ``LpDistance(power=2)``), scale t:

        L = mean_i −log( exp(−t d(x_i, p_{y_i})) / Σ_c exp(−t d(x_i, p_c)) )

    PML drops the samples whose probability underflows to exactly 0 (an infinite loss); this computes the
    log-softmax directly, so such a sample keeps its finite loss.
    """
    labels = _check_proxy_inputs(embeddings, labels, proxies, 0, "proxies")
    check_positive(softmax_scale, "softmax_scale")
    distance = distance if distance is not None else LpDistance(power=2)
    scores = distance(embeddings, proxies.to(embeddings.dtype))
    if not distance.is_inverted:
        scores = -scores
    return _reduced(F.cross_entropy(softmax_scale * scores, labels, reduction="none"), reducer)


@loss_module(
    proxy_nca_loss,
    formula="mean_i −log softmax_c(−t·d(x_i, p_c))[y_i]",
    paper="Movshovitz-Attias et al. No fuss distance metric learning using proxies. ICCV 2017",
    family="proxy",
)
class ProxyNCALoss(EmbeddingLoss):
    """ProxyNCA: softmax over class proxies. See :func:`proxy_nca_loss`.

    ``proxies`` is an ``nn.Parameter`` ``[num_classes, embedding_size]`` (standard normal, as in PML).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        softmax_scale: float = 1.0,
        distance: BaseSimilarity | None = None,
        reducer: Reducer | str = MeanReducer(),
    ) -> None:
        super().__init__()
        check_class_shape(num_classes, embedding_size)
        self.num_classes = num_classes
        self.softmax_scale = softmax_scale
        self.reducer = reducer
        self.distance = distance if distance is not None else LpDistance(power=2)
        self.proxies = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.proxies)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return proxy_nca_loss(
            embeddings,
            labels,
            self.proxies,
            softmax_scale=self.softmax_scale,
            distance=self.distance,
            reducer=self.reducer,
        )


def normalized_softmax_loss(
    embeddings: Tensor,
    labels: Tensor,
    weight: Tensor,
    *,
    temperature: float = 0.05,
    distance: BaseSimilarity | None = None,
    reducer: Reducer | str = MeanReducer(),
) -> Any:
    """Normalized softmax loss (Zhai & Wu, BMVC 2019), PML's ``NormalizedSoftmaxLoss``.

    With class weights ``W`` ``[D, C]`` whose columns are L2-normalised, L2-normalised embeddings (PML's
    default ``DotProductSimilarity()``) and temperature τ:

        L = mean_i −log( exp(x_i·w_{y_i} / τ) / Σ_c exp(x_i·w_c / τ) )
    """
    labels = _check_proxy_inputs(embeddings, labels, weight, 1, "W")
    check_positive(temperature, "temperature")
    distance = distance if distance is not None else DotProductSimilarity(normalize_embeddings=True)
    classes = F.normalize(weight.to(embeddings.dtype), p=2, dim=0).T
    logits = distance(embeddings, classes) / temperature
    if not distance.is_inverted:
        logits = -logits
    return _reduced(F.cross_entropy(logits, labels, reduction="none"), reducer)


@loss_module(
    normalized_softmax_loss,
    formula="mean_i −log softmax_c(x_i·w_c/τ)[y_i], ‖x‖=‖w‖=1",
    paper="Zhai, Wu. Classification is a strong baseline for deep metric learning. BMVC 2019",
    family="proxy",
)
class NormalizedSoftmaxLoss(EmbeddingLoss):
    """Normalized softmax: cross-entropy on cosine logits / τ. See :func:`normalized_softmax_loss`.

    ``W`` is an ``nn.Parameter`` ``[embedding_size, num_classes]`` (standard normal, as in PML).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        temperature: float = 0.05,
        distance: BaseSimilarity | None = None,
        reducer: Reducer | str = MeanReducer(),
    ) -> None:
        super().__init__()
        check_class_shape(num_classes, embedding_size)
        self.num_classes = num_classes
        self.temperature = temperature
        self.reducer = reducer
        self.distance = distance if distance is not None else DotProductSimilarity(normalize_embeddings=True)
        self.W = nn.Parameter(torch.empty(embedding_size, num_classes))
        nn.init.normal_(self.W)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return normalized_softmax_loss(
            embeddings, labels, self.W, temperature=self.temperature, distance=self.distance, reducer=self.reducer
        )


def _cosines(embeddings: Tensor, weight: Tensor) -> Tensor:
    """Cosines ``[N, C]`` between samples and the columns of ``W`` ``[D, C]``."""
    return CosineSimilarity()(embeddings, weight.to(embeddings.dtype).T)


def arcface_loss(
    embeddings: Tensor,
    labels: Tensor,
    weight: Tensor,
    *,
    margin: float = 28.6,
    scale: float = 64.0,
    reducer: Reducer | str = MeanReducer(),
) -> Any:
    """ArcFace, additive angular margin (Deng et al., CVPR 2019), PML's ``ArcFaceLoss``.

    With θ_ic the angle between ``x_i`` and the column ``w_c`` of ``W`` ``[D, C]``, margin m (in **degrees**,
    as in PML: 28.6° ≈ 0.5 rad) and scale s:

        L = mean_i −log( e^{s ψ(θ_iy)} / (e^{s ψ(θ_iy)} + Σ_{c≠y} e^{s cos θ_ic}) ),
        ψ(θ) = cos(θ + m) if θ ≤ π − m else cos θ − m sin m
    """
    labels = _check_proxy_inputs(embeddings, labels, weight, 1, "W")
    check_positive(scale, "scale")
    m = math.radians(margin)
    cosine = _cosines(embeddings, weight)
    column = labels[:, None]
    angles = torch.acos(cosine.gather(1, column).clamp(-1, 1))
    modified = torch.where(angles <= math.pi - m, torch.cos(angles + m), torch.cos(angles) - m * math.sin(m))
    return _reduced(F.cross_entropy(scale * cosine.scatter(1, column, modified), labels, reduction="none"), reducer)


def cosface_loss(
    embeddings: Tensor,
    labels: Tensor,
    weight: Tensor,
    *,
    margin: float = 0.35,
    scale: float = 64.0,
    reducer: Reducer | str = MeanReducer(),
) -> Any:
    """CosFace, additive cosine margin (Wang et al., CVPR 2018), PML's ``CosFaceLoss``.

    With ``cos θ_ic`` between ``x_i`` and the column ``w_c`` of ``W`` ``[D, C]``, margin m and scale s:

        L = mean_i −log( e^{s (cos θ_iy − m)} / (e^{s (cos θ_iy − m)} + Σ_{c≠y} e^{s cos θ_ic}) )
    """
    labels = _check_proxy_inputs(embeddings, labels, weight, 1, "W")
    check_positive(scale, "scale")
    cosine = _cosines(embeddings, weight)
    target = F.one_hot(labels, cosine.shape[1]).to(cosine.dtype)
    return _reduced(F.cross_entropy(scale * (cosine - margin * target), labels, reduction="none"), reducer)


class _MarginSoftmaxLoss(EmbeddingLoss):
    """Shared constructor of ArcFace and CosFace: ``W`` ``[embedding_size, num_classes]``, standard normal."""

    def __init__(
        self, num_classes: int, embedding_size: int, margin: float, scale: float, reducer: Reducer | str
    ) -> None:
        super().__init__()
        check_class_shape(num_classes, embedding_size)
        self.num_classes = num_classes
        self.margin = margin
        self.scale = scale
        self.reducer = reducer
        self.W = nn.Parameter(torch.empty(embedding_size, num_classes))
        nn.init.normal_(self.W)


@loss_module(
    arcface_loss,
    formula="mean_i −log softmax(s·[cos(θ_y + m), cos θ_c])[y]",
    paper="Deng, Guo, Xue, Zafeiriou. ArcFace: Additive angular margin loss for deep face recognition. CVPR'19",
    family="proxy",
)
class ArcFaceLoss(_MarginSoftmaxLoss):
    """ArcFace: softmax with an additive angular margin on the target class. See :func:`arcface_loss`.

    ``margin`` is in degrees (PML's convention; the paper's m = 0.5 rad ≈ 28.6°).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 28.6,
        scale: float = 64.0,
        reducer: Reducer | str = MeanReducer(),
    ) -> None:
        super().__init__(num_classes, embedding_size, margin, scale, reducer)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return arcface_loss(embeddings, labels, self.W, margin=self.margin, scale=self.scale, reducer=self.reducer)


@loss_module(
    cosface_loss,
    formula="mean_i −log softmax(s·[cos θ_y − m, cos θ_c])[y]",
    paper="Wang et al. CosFace: Large margin cosine loss for deep face recognition. CVPR 2018",
    family="proxy",
)
class CosFaceLoss(_MarginSoftmaxLoss):
    """CosFace: softmax with an additive cosine margin on the target class. See :func:`cosface_loss`."""

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 0.35,
        scale: float = 64.0,
        reducer: Reducer | str = MeanReducer(),
    ) -> None:
        super().__init__(num_classes, embedding_size, margin, scale, reducer)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return cosface_loss(embeddings, labels, self.W, margin=self.margin, scale=self.scale, reducer=self.reducer)
