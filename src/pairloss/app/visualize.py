"""Pictures of how a loss weights its pairs: the gradient it puts on one negative (or one mis-ordered) pair.

For metric losses: an anchor ``a`` as the query (twice, since PML-compatible pair losses ignore a batch with a single
pair of each kind) and a reference set of two unit vectors, a positive ``p`` with ``s_ap`` fixed and a negative ``n``
whose cosine similarity ``s_an`` sweeps ``[-1, 1]``; the weight is the size of the gradient on the negative as it
moves along the circle, ``|∂L/∂θ_an|`` (finite differences of the loss along the sweep), which stays finite for
distance-based losses where ``∂L/∂s`` does not. For ranking losses: a two-item list with relevance ``(1, 0)`` and
score gap ``Δ = s_1 − s_2``; the weight is ``|∂L/∂Δ|``. A loss that mines hard pairs puts its weight where the
negative is close to the anchor (large ``s_an``) or the pair is mis-ordered (``Δ < 0``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

__all__ = ["metric_pair_weights", "plot_pair_weights", "ranking_pair_weights"]

EmbeddingLossFn = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
RankingLossFn = Callable[[Tensor, Tensor], Tensor]


def _unit(angle: float) -> list[float]:
    return [float(np.cos(angle)), float(np.sin(angle))]


def metric_pair_weights(
    loss: EmbeddingLossFn, positive_similarity: float = 0.5, points: int = 201
) -> tuple[np.ndarray, np.ndarray]:
    """``(s_an, |∂L/∂θ_an|)`` for the anchor and reference pair described in the module docstring."""
    if not -1.0 < positive_similarity < 1.0:
        raise ValueError(f"positive_similarity must lie in (-1, 1), got {positive_similarity}")
    angles = np.linspace(np.pi - 1e-3, 1e-3, points)  # s_an from -1 to 1
    positive_angle = -float(np.arccos(positive_similarity))  # on the other side of the anchor
    anchor = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    anchor_label, reference_labels = torch.tensor([0, 0]), torch.tensor([0, 1])
    values = []
    with torch.no_grad():
        for angle in angles:
            reference = torch.tensor([_unit(positive_angle), _unit(angle)], dtype=torch.float64)
            values.append(float(loss(anchor, anchor_label, reference, reference_labels)))
    return np.cos(angles), np.abs(np.gradient(np.array(values), angles))


def ranking_pair_weights(loss: RankingLossFn, points: int = 201, span: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """``(Δ, |∂L/∂Δ|)`` for a two-item list with relevance ``(1, 0)`` and scores ``(Δ, 0)``."""
    gaps = torch.linspace(-span, span, points, dtype=torch.float64, requires_grad=True)
    scores = torch.stack([gaps, torch.zeros_like(gaps)], dim=1)
    relevance = torch.tensor([[1.0, 0.0]], dtype=torch.float64).expand(points, 2)
    weights = []
    for i in range(points):
        (grad,) = torch.autograd.grad(loss(scores[i : i + 1], relevance[i : i + 1]), gaps)
        weights.append(float(grad[i].abs()))
    return gaps.detach().numpy(), np.array(weights)


def plot_pair_weights(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path | str, xlabel: str, title: str
) -> None:
    """One line per loss, each normalised to a maximum of 1, written to ``path`` (PNG)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, (x, weight) in curves.items():
        top = weight.max()
        ax.plot(x, weight / top if top > 0 else weight, label=name)
    ax.set(xlabel=xlabel, ylabel="pair weight (normalised)", title=title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
