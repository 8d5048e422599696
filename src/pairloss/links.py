"""Which link? How a pair's margin becomes its loss: the fourth of the four parts of a pairwise loss.

A link maps the **margin** ``z`` of a pair (how well the pair is already ordered: larger is better, e.g.
``s_i − s_j`` for a ranked pair or ``s_ij − m`` for a positive pair) to a loss ``φ(z)``, decreasing in ``z``, and
knows its **derivative** ``φ'(z)``. Because the derivative is known, a loss built from a link
(:func:`pairloss.pair_loss`) gets its gradient from the slopes ``φ'(z) ∂z/∂s`` accumulated block by block in the
forward pass: no autograd graph over the pairs and no recomputation in the backward pass.

=======================  ==========================================  ==========================================
link                     φ(z)                                        used by
=======================  ==========================================  ==========================================
:class:`Logistic`        ``log(1 + e^{−σ z})``                        RankNet, BPR, DPSH, HashNet, multi-label
:class:`Hinge`           ``[m − z]_+``                               contrastive, RankSVM, triplet margin, DSH
:class:`SquaredHinge`    ``[m − z]_+²``                              lifted structure
:class:`Exponential`     ``e^{−σ z}``                                RankBoost, multi-label exponential
:class:`SigmoidRank`     ``σ(−z / τ)``                               soft zero-one, RS@k and Smooth-AP ranks
:class:`Softplus`        ``(1/β) log(1 + e^{β (m − z)})``            smooth triplet (a smooth hinge)
:class:`Linear`          ``−z``                                      DSH / ASH positive terms
:class:`LogSumExp`       ``(1/γ) log(1 + Σ_j e^{−γ z_j})``, per row  multi-similarity, lifted, circle
=======================  ==========================================  ==========================================

:class:`LogSumExp` is a *row* link: it pools all pairs of one anchor into one loss (a soft maximum of their
violations) and gives each pair its share of the derivative. Any link can be scaled, ``0.5 * Hinge()``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from pairloss._sparse_pairs import SparsePairWeights
from pairloss._tracing import host_reads_allowed

__all__ = [
    "Exponential",
    "Hinge",
    "Linear",
    "Link",
    "LogSumExp",
    "Logistic",
    "Scaled",
    "SigmoidRank",
    "Softplus",
    "SquaredHinge",
    "get_link",
]


class Link(ABC):
    """A pair link ``φ(z)``: a loss decreasing in the margin ``z``, with its derivative ``φ'(z)``."""

    @abstractmethod
    def value(self, z: Tensor) -> Tensor:
        """``φ(z)``, elementwise."""

    @abstractmethod
    def derivative(self, z: Tensor) -> Tensor:
        """``φ'(z)``, elementwise (a subgradient at kinks: the one-sided slope from the loss side is 0)."""

    def value_and_derivative(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(φ(z), φ'(z))``; links override it where both share their work."""
        return self.value(z), self.derivative(z)

    def __call__(self, z: Tensor) -> Tensor:
        return self.value(z)

    def __rmul__(self, factor: float) -> Link:
        return Scaled(self, float(factor))

    def __mul__(self, factor: float) -> Link:
        return Scaled(self, float(factor))

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({fields})"


def _positive(value: float, name: str) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _finite(value: float, name: str) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


class Scaled(Link):
    """``c · φ(z)`` for a link ``φ`` and a constant ``c`` (what ``c * link`` returns)."""

    def __init__(self, link: Link, factor: float) -> None:
        self.link = link
        self.factor = _finite(factor, "factor")

    def value(self, z: Tensor) -> Tensor:
        return self.factor * self.link.value(z)

    def derivative(self, z: Tensor) -> Tensor:
        return self.factor * self.link.derivative(z)

    def value_and_derivative(self, z: Tensor) -> tuple[Tensor, Tensor]:
        value, slope = self.link.value_and_derivative(z)
        return self.factor * value, self.factor * slope


class Logistic(Link):
    """``φ(z) = log(1 + e^{−σ z})``, ``φ'(z) = −σ · sigmoid(−σ z)`` (the logistic / RankNet link)."""

    def __init__(self, sigma: float = 1.0) -> None:
        self.sigma = _positive(sigma, "sigma")

    def value(self, z: Tensor) -> Tensor:
        return F.softplus(-self.sigma * z)

    def derivative(self, z: Tensor) -> Tensor:
        return torch.sigmoid(-self.sigma * z).mul_(-self.sigma)

    def value_and_derivative(self, z: Tensor) -> tuple[Tensor, Tensor]:
        u = z.neg() if self.sigma == 1.0 else z * -self.sigma
        return F.softplus(u), u.sigmoid_().mul_(-self.sigma)


class Hinge(Link):
    """``φ(z) = [m − z]_+``, ``φ'(z) = −1[z < m]`` (RankSVM, contrastive and triplet margin losses)."""

    def __init__(self, margin: float = 0.0) -> None:
        self.margin = _finite(margin, "margin")

    def value(self, z: Tensor) -> Tensor:
        return F.relu(self.margin - z)

    def derivative(self, z: Tensor) -> Tensor:
        return -(z < self.margin).to(z.dtype)


class SquaredHinge(Link):
    """``φ(z) = [m − z]_+²``, ``φ'(z) = −2 [m − z]_+``."""

    def __init__(self, margin: float = 0.0) -> None:
        self.margin = _finite(margin, "margin")

    def value(self, z: Tensor) -> Tensor:
        return F.relu(self.margin - z).square()

    def derivative(self, z: Tensor) -> Tensor:
        return F.relu(self.margin - z).mul_(-2.0)


class Exponential(Link):
    """``φ(z) = e^{−σ z}``, ``φ'(z) = −σ e^{−σ z}`` (RankBoost, AdaBoost)."""

    def __init__(self, sigma: float = 1.0) -> None:
        self.sigma = _positive(sigma, "sigma")

    def value(self, z: Tensor) -> Tensor:
        return torch.exp(-self.sigma * z)

    def derivative(self, z: Tensor) -> Tensor:
        return torch.exp(-self.sigma * z).mul_(-self.sigma)

    def value_and_derivative(self, z: Tensor) -> tuple[Tensor, Tensor]:
        value = self.value(z)
        return value, value * -self.sigma


class SigmoidRank(Link):
    """``φ(z) = sigmoid(−z / τ)``, ``φ'(z) = −p (1 − p) / τ``: a smooth 0/1 count of mis-ordered pairs (the soft
    zero-one loss, and the smooth rank of RS@k and Smooth-AP)."""

    def __init__(self, tau: float = 1.0) -> None:
        self.tau = _positive(tau, "tau")

    def value(self, z: Tensor) -> Tensor:
        return torch.sigmoid(-z / self.tau)

    def derivative(self, z: Tensor) -> Tensor:
        p = torch.sigmoid(-z / self.tau)
        return p.mul_(1 - p).div_(-self.tau)

    def value_and_derivative(self, z: Tensor) -> tuple[Tensor, Tensor]:
        p = torch.sigmoid(-z / self.tau)
        return p, p * (1 - p) / -self.tau


class Softplus(Link):
    """``φ(z) = (1/β) log(1 + e^{β (m − z)})``, ``φ'(z) = −sigmoid(β (m − z))``: a smooth hinge (the smooth triplet
    loss of PML with ``β = 1``)."""

    def __init__(self, margin: float = 0.0, beta: float = 1.0) -> None:
        self.margin = _finite(margin, "margin")
        self.beta = _positive(beta, "beta")

    def value(self, z: Tensor) -> Tensor:
        return F.softplus(self.margin - z, beta=self.beta)

    def derivative(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.beta * (self.margin - z)).neg_()


class Linear(Link):
    """``φ(z) = −z``, ``φ'(z) = −1``: the margin itself as the loss (a pull that never saturates)."""

    def value(self, z: Tensor) -> Tensor:
        return -z

    def derivative(self, z: Tensor) -> Tensor:
        return torch.full_like(z, -1.0)


class LogSumExp:
    """A row link: all pairs ``j`` of one anchor pooled into ``ψ = (1/γ) log(1 + Σ_j e^{−γ z_j})``.

    ``∂ψ/∂z_j = −e^{−γ z_j} / (1 + Σ_k e^{−γ z_k})``: each pair's share of a soft maximum of the violations
    (multi-similarity, Wang et al. 2019). ``add_one=False`` drops the ``1`` (a soft maximum without the floor at 0,
    as in the lifted structure and circle losses); an anchor without pairs then gets ``ψ = 0``.
    """

    def __init__(self, gamma: float = 1.0, add_one: bool = True) -> None:
        self.gamma = _positive(gamma, "gamma")
        self.add_one = bool(add_one)

    def value(self, z: Tensor, mask: Tensor) -> Tensor:
        """``ψ`` per row of ``z [b, M]`` over the entries where ``mask`` is true (autograd-friendly reference)."""
        x = (-self.gamma * z).masked_fill(~mask, float("-inf"))
        if self.add_one:
            x = torch.cat([x, x.new_zeros(x.shape[0], 1)], dim=1)
        out = torch.logsumexp(x, dim=1) / self.gamma
        return torch.where(mask.any(dim=1) | self.add_one, out, torch.zeros_like(out))

    def rows(
        self,
        s: Tensor,
        mask: Tensor,
        scale: float,
        offset: float,
        n_active: int,
        margin_weight: Callable[[Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, Tensor | SparsePairWeights, Tensor]:
        """``ψ`` per row for the margins ``z = α(s) · (scale · s + offset)`` on ``mask``, without autograd.

        ``margin_weight`` gives the constant weights ``α`` of the scores (1 when ``None``). Returns
        ``(ψ [b], ∂ψ/∂s, nonempty [b])``; the slope is a dense ``[b, M]`` tensor, or :class:`SparsePairWeights`
        when ``mask`` has few entries (``n_active`` of them), where the work runs on the gathered entries.
        Exponents are shifted by the row maximum and floored just above the smallest normal number before ``exp``
        (``exp`` of an underflowing argument is some ten times slower on CPUs).
        """
        return _log_sum_exp_rows(s, scale, offset, self.gamma, mask, n_active, self.add_one, margin_weight)

    def __repr__(self) -> str:
        return f"LogSumExp(gamma={self.gamma!r}, add_one={self.add_one!r})"


#: On the CPU outside :func:`torch.compile`, a mask with at most this fraction of true entries takes the gathered
#: path of :meth:`LogSumExp.rows`. The gathered path has a data-dependent size (the caller reads the count back to
#: the host, and :func:`torch.nonzero` does too): free on the CPU, a stall of the stream on a GPU and untraceable
#: by ``torch.compile``, which therefore always take the dense path. 0 turns the gathered path off on the CPU too
#: (see :func:`pairloss.engine.sync_free`).
SPARSE_MASK_DENSITY = 0.05


def _margins(values: Tensor, scale: float, offset: float) -> Tensor:
    """``scale · values + offset`` in one pass when ``scale`` is ±1 (the margins of a positive or negative pair)."""
    if scale == 1.0:
        return values + offset
    if scale == -1.0:
        return offset - values
    return values.mul(scale).add_(offset)


def _log_sum_exp_rows(
    s: Tensor,
    scale: float,
    offset: float,
    gamma: float,
    mask: Tensor,
    n_active: int,
    add_one: bool,
    margin_weight: Callable[[Tensor], Tensor] | None,
) -> tuple[Tensor, Tensor | SparsePairWeights, Tensor]:
    """Per row ``(1/γ) log([1 +] Σ_{j ∈ mask} e^{u_ij})`` with ``u = −γ α(s) (scale · s + offset)``, its slope
    ``∂/∂s = −α · scale · softmax`` and the rows with at least one entry. Rows without entries give 0.

    With margin weights, ``w = −γ α`` multiplies the margins and, divided by ``−γ / scale``, gives the slope; the
    constant factors are folded into the denominator so that the slope costs no extra pass over the block.
    """
    floor = math.log(torch.finfo(s.dtype).tiny) + 2.0
    n_rows = s.shape[0]
    if SPARSE_MASK_DENSITY > 0 and n_active <= SPARSE_MASK_DENSITY * mask.numel() and host_reads_allowed(s.device):
        rows, columns = mask.nonzero(as_tuple=True)
        gathered = s[rows, columns]
        weight = None if margin_weight is None else margin_weight(gathered).mul_(-gamma)
        u = _margins(gathered, scale, offset)
        u = u.mul_(-gamma) if weight is None else u.mul_(weight)
        start = 0.0 if add_one else float("-inf")
        shift = s.new_full((n_rows,), start).scatter_reduce_(0, rows, u, "amax")
        nonempty = torch.zeros(n_rows, dtype=torch.bool, device=s.device)
        nonempty[rows] = True
        if not add_one:
            shift = torch.where(nonempty, shift, 0.0)
        terms = u.sub_(shift[rows]).clamp_min_(floor).exp_()
        denominator = s.new_zeros(n_rows).index_add_(0, rows, terms)
        denominator = denominator.add_(torch.exp(-shift)) if add_one else torch.where(nonempty, denominator, 1.0)
        value = (shift + torch.log(denominator)) / gamma
        if weight is not None:
            terms.mul_(weight)
        slope = terms.div_(denominator[rows] * (gamma / scale if weight is not None else -1.0 / scale))
        return value, SparsePairWeights(rows, columns, slope, (n_rows, s.shape[1])), nonempty
    if margin_weight is None:
        weight = None
        # u = a·s + c − shift in one pass; entries off the mask go to −inf, then to the floor, then to 0
        a, c = -gamma * scale, -gamma * offset
        off_mask = s.new_tensor(float("-inf") if a > 0 else float("inf"))
        masked = torch.where(mask, s, off_mask)
        extreme = masked.amax(dim=1) if a > 0 else masked.amin(dim=1)
        nonempty = torch.isfinite(extreme)
        shift = extreme.mul_(a).add_(c)
        shift = shift.clamp_min_(0) if add_one else torch.where(nonempty, shift, 0.0)
        terms = torch.add((c - shift)[:, None], masked, alpha=a, out=masked)
    else:
        weight = margin_weight(s).mul_(-gamma)
        terms = _margins(s, scale, offset).mul_(weight)
        terms = torch.where(mask, terms, s.new_tensor(float("-inf")), out=terms)
        shift = terms.amax(dim=1)
        nonempty = torch.isfinite(shift)
        shift = shift.clamp_min_(0) if add_one else torch.where(nonempty, shift, 0.0)
        terms.sub_(shift[:, None])
    terms = terms.clamp_min_(floor).exp_()
    terms = torch.where(mask, terms, terms.new_tensor(0.0), out=terms)
    denominator = terms.sum(dim=1)
    denominator = denominator.add_(torch.exp(-shift)) if add_one else torch.where(nonempty, denominator, 1.0)
    value = (shift + torch.log(denominator)) / gamma
    if weight is not None:
        terms.mul_(weight)
    return (
        value,
        terms.div_((denominator * (gamma / scale if weight is not None else -1.0 / scale))[:, None]),
        nonempty,
    )


_BY_NAME: dict[str, type[Link]] = {
    "logistic": Logistic,
    "hinge": Hinge,
    "squared_hinge": SquaredHinge,
    "exponential": Exponential,
    "sigmoid_rank": SigmoidRank,
    "softplus": Softplus,
    "linear": Linear,
}


def get_link(name: str | Link) -> Link:
    """A link from its name (``"logistic"``, ``"hinge"``, ...) with default parameters, or the link itself."""
    if isinstance(name, Link):
        return name
    if name not in _BY_NAME:
        raise ValueError(f"link must be a Link or one of {sorted(_BY_NAME)}, got {name!r}")
    return _BY_NAME[name]()
