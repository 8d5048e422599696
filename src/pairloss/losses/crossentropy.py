"""Cross-entropy on a linear classifier over embeddings, and the pairwise cross-entropy it upper-bounds.

Boudiaf, Rony, Ziko, Granger, Pedersoli, Piantanida, Ben Ayed. *A unifying mutual information view of metric
learning: cross-entropy vs. pairwise losses.* ECCV 2020 (arXiv 2003.08983).

Notation: features ``z_i = f(x_i)`` (``[N, D]``; optionally L2-normalised and divided by a temperature, see
:func:`classifier_features`), a linear classifier ``θ`` ``[C, D]`` without bias, softmax probabilities
``p_ik = softmax_k(θ_kᵀ z_i)``, class sums ``c_k = (1/n) Σ_{i: y_i = k} z_i`` and soft means
``c_kˢ = (1/n) Σ_i p_ik z_i`` (the class prototypes of the paper's bound-optimisation view).

The paper splits the cross-entropy with a λ > 0 as ``CE(θ) = f₁(θ) + f₂(θ)`` where
``f₁(θ) = −(1/n) Σ_i θ_{y_i}ᵀ z_i + (λ/2) Σ_k ‖θ_k‖²`` (convex, minimum ``T`` at ``θ_k = c_k/λ``) and
``f₂(θ) = (1/n) Σ_i log Σ_k exp(θ_kᵀ z_i) − (λ/2) Σ_k ‖θ_k‖²`` (concave when λ is large enough), and defines

    L_PCE = −1/(2λn²) Σ_i Σ_{j: y_j = y_i} z_iᵀ z_j                                   (tightness T)
            + (1/n) Σ_i log Σ_k exp( 1/(λn) Σ_j p_jk z_iᵀ z_j ) − 1/(2λ) Σ_k ‖c_kˢ‖²     (contrastive)

and states ``L_CE ≥ L_PCE`` for the alternating (features, classifier) minimisation. As a pointwise statement
that needs conditions; :func:`pce_bound` evaluates the version proved in ``docs/crossentropy.md``: if
``λ ≥ λ₀ = (1/(2n)) Σ_i ‖z_i‖²`` (which makes ``f₂`` concave), then for every classifier θ

    L_CE(θ, Z) ≥ L_PCE(Z; p(θ), λ) − (1/λ) Σ_k ‖c_kˢ − λ θ_k‖²,

with equality of the last term to 0 at the classifier's fixed point ``θ_k = c_kˢ/λ`` (the paper's θ-step).

These are classifier losses and a bound on them, not sums of a link over pairs, so they are not built by
:func:`pairloss.pair_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pairloss._validation import check_class_shape, check_embeddings, check_floating, check_labels, check_positive
from pairloss.losses.base import EmbeddingLoss, loss_module

__all__ = [
    "CrossEntropyLoss",
    "PCEBound",
    "PCETerms",
    "PairwiseCrossEntropyLoss",
    "classifier_features",
    "concavity_lambda",
    "cross_entropy_loss",
    "pairwise_cross_entropy_loss",
    "pce_bound",
    "pce_terms",
]


def _check_inputs(embeddings: Tensor, labels: Tensor, weight: Tensor) -> Tensor:
    """Validate embeddings ``[N, D]``, class ids ``[N]`` in ``[0, C)`` and a classifier ``weight`` ``[C, D]``."""
    check_embeddings(embeddings)
    labels = check_labels(labels, embeddings.shape[0], device=embeddings.device)
    if labels.ndim != 1:
        raise ValueError("cross-entropy losses need 1-D class ids, got multi-hot labels")
    check_floating(weight, "weight", ndim=2)
    if weight.shape[1] != embeddings.shape[1]:
        raise ValueError(f"weight has {weight.shape[1]} features but embeddings have {embeddings.shape[1]}")
    n_classes = weight.shape[0]
    if int(labels.min()) < 0 or int(labels.max()) >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    return labels.long()  # torch's cross-entropy and one_hot take int64 class ids only


def classifier_features(embeddings: Tensor, *, normalize: bool = False, temperature: float = 1.0) -> Tensor:
    """The classifier's input ``z = e / τ`` (``z = e / (‖e‖ τ)`` with ``normalize``): logits are ``z θᵀ``."""
    check_positive(temperature, "temperature")
    z = F.normalize(embeddings, p=2, dim=1) if normalize else embeddings
    return z / temperature


def cross_entropy_loss(
    embeddings: Tensor,
    labels: Tensor,
    weight: Tensor,
    *,
    normalize: bool = False,
    temperature: float = 1.0,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Softmax cross-entropy of a linear classifier ``weight`` ``[C, D]`` (no bias) over the embeddings.

    With ``z_i`` from :func:`classifier_features` and the smoothed target ``q_ik = (1 − ε) [k = y_i] + ε/C``:

        L_CE = −(1/n) Σ_i Σ_k q_ik log softmax_k(θ_kᵀ z_i)

    Boudiaf et al., ECCV 2020 (the loss they show upper-bounds a pairwise loss); label smoothing as in
    Szegedy et al., CVPR 2016.
    """
    labels = _check_inputs(embeddings, labels, weight)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
    z = classifier_features(embeddings, normalize=normalize, temperature=temperature)
    logits = z @ weight.to(z.dtype).T
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def concavity_lambda(features: Tensor) -> Tensor:
    """``λ₀ = (1/(2n)) Σ_i ‖z_i‖²``: for ``λ ≥ λ₀`` the function ``f₂`` of the PCE bound is concave in θ.

    The Hessian of ``(1/n) Σ_i log Σ_k exp(θ_kᵀ z_i)`` is ``(1/n) Σ_i (diag p_i − p_i p_iᵀ) ⊗ z_i z_iᵀ`` and
    ``λ_max(diag p − p pᵀ) ≤ max_k 2 p_k (1 − p_k) ≤ 1/2`` (Gershgorin), so its largest eigenvalue is ``≤ λ₀``.
    Returned detached: λ is a constant of the bound, not a function to differentiate. When every feature is 0 the
    bound holds for every λ > 0 and the PCE does not depend on λ; the smallest positive number is returned then.
    """
    return (features.detach().pow(2).sum(dim=1).mean() / 2).clamp_min(torch.finfo(features.dtype).tiny)


@dataclass(frozen=True)
class PCETerms:
    """The two parts of the pairwise cross-entropy, the soft means (prototypes) and the λ used."""

    tightness: Tensor
    contrastive: Tensor
    soft_means: Tensor
    lam: Tensor

    @property
    def pce(self) -> Tensor:
        return self.tightness + self.contrastive


def pce_terms(features: Tensor, labels: Tensor, probabilities: Tensor, lam: float | Tensor) -> PCETerms:
    """Tightness and contrastive terms of the PCE on classifier features ``z`` ``[N, D]`` and ``p`` ``[N, C]``.

        T = −1/(2λn²) Σ_i Σ_{j: y_j = y_i} z_iᵀ z_j = −1/(2λ) Σ_k ‖c_k‖²,  c_k = (1/n) Σ_{i: y_i = k} z_i
        C = (1/n) Σ_i log Σ_k exp(z_iᵀ c_kˢ / λ) − 1/(2λ) Σ_k ‖c_kˢ‖²,   c_kˢ = (1/n) Σ_i p_ik z_i

    Both are computed through the ``C × D`` class sums, in O(N·C·D), never the ``N × N`` Gram matrix.
    """
    n, n_classes = features.shape[0], probabilities.shape[1]
    lam_t = torch.as_tensor(lam, dtype=features.dtype, device=features.device)
    if not bool(lam_t > 0):
        raise ValueError(f"lam must be > 0, got {float(lam_t)}")
    one_hot = F.one_hot(labels, n_classes).to(features.dtype)
    class_sums = one_hot.T @ features / n
    tightness = -class_sums.pow(2).sum() / (2 * lam_t)
    soft_means = probabilities.to(features.dtype).T @ features / n
    scores = features @ soft_means.T / lam_t
    contrastive = torch.logsumexp(scores, dim=1).mean() - soft_means.pow(2).sum() / (2 * lam_t)
    return PCETerms(tightness, contrastive, soft_means, lam_t)


def pairwise_cross_entropy_loss(
    embeddings: Tensor,
    labels: Tensor,
    weight: Tensor,
    *,
    lam: float | None = None,
    normalize: bool = False,
    temperature: float = 1.0,
) -> Tensor:
    """Pairwise cross-entropy (PCE) of Boudiaf et al. (ECCV 2020, Prop. 1), prototypes from the classifier.

        L_PCE = −1/(2λn²) Σ_i Σ_{j: y_j = y_i} z_iᵀ z_j
                + (1/n) Σ_i log Σ_k exp( 1/(λn) Σ_j p_jk z_iᵀ z_j ) − 1/(2λ) Σ_k ‖c_kˢ‖²

    with ``z`` from :func:`classifier_features`, ``p_ik = softmax_k(θ_kᵀ z_i)`` from ``weight`` θ ``[C, D]``
    (differentiable in both; pass ``weight.detach()`` for the paper's feature step with p fixed) and
    ``c_kˢ = (1/n) Σ_i p_ik z_i``. ``lam = None`` uses :func:`concavity_lambda`, the smallest λ for which the
    bound of :func:`pce_bound` is proved. The first term pulls same-class features together (tightness); the
    second pushes every feature away from the soft means of the other classes (contrastive).
    """
    labels = _check_inputs(embeddings, labels, weight)
    z = classifier_features(embeddings, normalize=normalize, temperature=temperature)
    probabilities = torch.softmax(z @ weight.to(z.dtype).T, dim=1)
    return pce_terms(z, labels, probabilities, concavity_lambda(z) if lam is None else lam).pce


@dataclass(frozen=True)
class PCEBound:
    """One evaluation of ``CE ≥ PCE − gap`` (all scalars): ``holds`` tells whether it held numerically."""

    cross_entropy: Tensor
    tightness: Tensor
    contrastive: Tensor
    gap: Tensor
    lam: Tensor

    @property
    def pce(self) -> Tensor:
        return self.tightness + self.contrastive

    @property
    def lower_bound(self) -> Tensor:
        return self.pce - self.gap

    def holds(self, tolerance: float = 1e-6) -> bool:
        return bool(self.cross_entropy >= self.lower_bound - tolerance * (1 + self.lower_bound.abs()))


def pce_bound(
    embeddings: Tensor,
    labels: Tensor,
    weight: Tensor,
    *,
    lam: float | None = None,
    normalize: bool = False,
    temperature: float = 1.0,
) -> PCEBound:
    """Evaluate the cross-entropy, the PCE and the gap constant of the proved bound at classifier θ.

        L_CE(θ, Z) ≥ L_PCE(Z; p(θ), λ) − (1/λ) Σ_k ‖c_kˢ − λ θ_k‖²    for every θ when λ ≥ λ₀

    (``λ₀`` from :func:`concavity_lambda`; ``lam = None`` uses λ₀; a ``lam`` below λ₀ raises ``ValueError``).
    Proof: ``f₁(θ) ≥ T``, and concavity of ``f₂`` gives ``f₂(θ̂) ≤ f₂(θ) + ∇f₂(θ)ᵀ(θ̂ − θ)`` at
    ``θ̂ = cˢ/λ``, where ``f₂(θ̂) = C`` (the contrastive term) and ``∇_{θ_k} f₂(θ) = c_kˢ − λθ_k = λ(θ̂_k − θ_k)``.
    """
    labels = _check_inputs(embeddings, labels, weight)
    z = classifier_features(embeddings, normalize=normalize, temperature=temperature)
    lam0 = concavity_lambda(z)
    if lam is not None and lam < float(lam0) * (1 - 1e-12):
        raise ValueError(f"lam = {lam} is below the concavity threshold λ₀ = {float(lam0):.6g}; the bound needs λ ≥ λ₀")
    theta = weight.to(z.dtype)
    logits = z @ theta.T
    terms = pce_terms(z, labels, torch.softmax(logits, dim=1), lam0 if lam is None else lam)
    gap = (terms.soft_means - terms.lam * theta).pow(2).sum() / terms.lam
    return PCEBound(F.cross_entropy(logits, labels), terms.tightness, terms.contrastive, gap, terms.lam)


@loss_module(
    cross_entropy_loss,
    formula="−(1/n) Σ_i Σ_k q_ik log softmax_k(θ_kᵀ z_i), q = (1−ε) onehot + ε/C",
    paper="Boudiaf et al. A unifying mutual information view of metric learning: cross-entropy vs. pairwise losses. "
    "ECCV 2020",
    family="crossentropy",
)
class CrossEntropyLoss(EmbeddingLoss):
    """Softmax cross-entropy on a learnable linear classifier over the embeddings. See :func:`cross_entropy_loss`.

    ``weight`` is an ``nn.Parameter`` ``[num_classes, embedding_size]`` (``nn.Linear``'s initialisation, no bias).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        normalize: bool = False,
        temperature: float = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        check_class_shape(num_classes, embedding_size)
        self.num_classes = num_classes
        self.normalize = normalize
        self.temperature = temperature
        self.label_smoothing = label_smoothing
        self.weight = nn.Parameter(nn.Linear(embedding_size, num_classes, bias=False).weight.detach().clone())

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return cross_entropy_loss(
            embeddings,
            labels,
            self.weight,
            normalize=self.normalize,
            temperature=self.temperature,
            label_smoothing=self.label_smoothing,
        )

    def bound(self, embeddings: Tensor, labels: Tensor, lam: float | None = None) -> PCEBound:
        """The proved bound ``CE ≥ PCE − gap`` at the current classifier (see :func:`pce_bound`)."""
        return pce_bound(
            embeddings, labels, self.weight, lam=lam, normalize=self.normalize, temperature=self.temperature
        )


@loss_module(
    pairwise_cross_entropy_loss,
    formula="−1/(2λn²) Σ_{y_i=y_j} z_iᵀz_j + (1/n) Σ_i log Σ_k exp(z_iᵀc_kˢ/λ) − Σ_k ‖c_kˢ‖²/(2λ)",
    paper="Boudiaf et al. A unifying mutual information view of metric learning: cross-entropy vs. pairwise losses. "
    "ECCV 2020",
    family="crossentropy",
)
class PairwiseCrossEntropyLoss(EmbeddingLoss):
    """Pairwise cross-entropy: tightness + contrastive terms with soft-mean prototypes from a learnable classifier.

    See :func:`pairwise_cross_entropy_loss`. ``weight`` ``[num_classes, embedding_size]`` gives ``p_ik``.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        lam: float | None = None,
        normalize: bool = False,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        check_class_shape(num_classes, embedding_size)
        if lam is not None:
            check_positive(lam, "lam")
        self.num_classes = num_classes
        self.lam = lam
        self.normalize = normalize
        self.temperature = temperature
        self.weight = nn.Parameter(nn.Linear(embedding_size, num_classes, bias=False).weight.detach().clone())

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return pairwise_cross_entropy_loss(
            embeddings,
            labels,
            self.weight,
            lam=self.lam,
            normalize=self.normalize,
            temperature=self.temperature,
        )
