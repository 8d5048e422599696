"""Pictures of how a loss weights its pairs: the gradient it puts on one negative (or one mis-ordered) pair.

For metric losses: an anchor ``a`` as the query (twice, since PML-compatible pair losses ignore a batch with a single
pair of each kind) and a reference set of two unit vectors, a positive ``p`` with ``s_ap`` fixed and a negative ``n``
whose cosine similarity ``s_an`` sweeps ``[-1, 1]``; the weight is the size of the gradient that the loss's backward
puts on the negative's angle, ``|∂L/∂θ_an|`` (autograd, so weights that a loss treats as constants, such as the
circle loss's, stay constants), which stays finite for distance-based losses where ``∂L/∂s`` does not. For ranking
losses: a two-item list with relevance ``(1, 0)`` and score gap ``Δ = s_1 − s_2``; the weight is ``|∂L/∂Δ|``. A
loss that mines hard pairs puts its weight where the negative is close to the anchor (large ``s_an``) or the pair is
mis-ordered (``Δ < 0``).

The two pictures of the docs are written by ``python -m pairloss.app.visualize docs/figures``
(:func:`write_pair_weight_figures`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

__all__ = ["metric_pair_weights", "plot_pair_weights", "ranking_pair_weights", "write_pair_weight_figures"]

#: Line styles cycled through the curves, so that curves which touch or cross stay apart in print and for readers
#: who do not tell the colours apart.
_STYLES = ("-", "--", "-.", ":")

EmbeddingLossFn = Callable[..., Tensor]  # PML's call: (embeddings, labels, indices_tuple, ref_emb=, ref_labels=)
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
    positive = torch.tensor([_unit(positive_angle)], dtype=torch.float64)
    weights = []
    for angle in angles:
        theta = torch.tensor(float(angle), dtype=torch.float64, requires_grad=True)
        negative = torch.stack([torch.cos(theta), torch.sin(theta)])[None]
        value = loss(anchor, anchor_label, ref_emb=torch.cat([positive, negative]), ref_labels=reference_labels)
        (grad,) = torch.autograd.grad(value, theta)
        weights.append(abs(float(grad)))
    return np.cos(angles), np.array(weights)


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


def _merged(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Normalised curves, those equal to one drawn earlier merged into it under a joint label (``A = B``): a curve
    drawn exactly over another would be hidden."""
    merged: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (x, weight) in curves.items():
        top = weight.max()
        normalised = weight / top if top > 0 else weight
        twin = next(
            (
                label
                for label, (x0, w0) in merged.items()
                if x0.shape == x.shape and np.allclose(x0, x) and np.allclose(w0, normalised, atol=1e-3)
            ),
            None,
        )
        if twin is None:
            merged[name] = (x, normalised)
        else:  # renamed in place, so the legend keeps the order the curves were given in
            merged = {(f"{label} = {name}" if label == twin else label): curve for label, curve in merged.items()}
    return merged


def plot_pair_weights(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path | str, xlabel: str, title: str
) -> None:
    """One line per loss, each normalised to a maximum of 1, written to ``path`` (PNG).

    Curves that coincide are drawn once, labelled ``A = B``; the others differ in colour and line style.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for k, (name, (x, weight)) in enumerate(_merged(curves).items()):
        ax.plot(x, weight, label=name, linestyle=_STYLES[k % len(_STYLES)], linewidth=1.6)
    ax.set(xlabel=xlabel, ylabel="pair weight (normalised)", title=title)
    ax.legend(fontsize=8, ncol=2, loc="upper left", framealpha=0.9)
    ax.set_ylim(-0.03, 1.25)  # room above the curves for the legend
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_pair_weight_figures(out_dir: Path | str) -> list[Path]:
    """Write the docs' two pictures, ``pair-weights-metric.png`` and ``pair-weights-ranking.png``, to ``out_dir``."""
    import pairloss

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metric_losses = {
        "contrastive": pairloss.ContrastiveLoss(),
        "triplet (m=0.2)": pairloss.TripletMarginLoss(margin=0.2),
        "multi-similarity": pairloss.MultiSimilarityLoss(),
        "circle": pairloss.CircleLoss(),
        "NT-Xent (τ=0.1)": pairloss.NTXentLoss(temperature=0.1),
        "SupCon (τ=0.1)": pairloss.SupConLoss(temperature=0.1),
    }
    ranking_losses = {
        "RankNet": pairloss.RankNetLoss(),
        "pairwise hinge": pairloss.PairwiseHingeLoss(),
        "soft zero-one": pairloss.PairwiseSoftZeroOneLoss(),
        "ListNet": pairloss.ListNetLoss(),
    }
    metric = out / "pair-weights-metric.png"
    plot_pair_weights(
        {name: metric_pair_weights(loss) for name, loss in metric_losses.items()},
        metric,
        "cosine similarity of the negative pair s_an (s_ap = 0.5)",
        "How metric losses weight a negative pair",
    )
    ranking = out / "pair-weights-ranking.png"
    plot_pair_weights(
        {name: ranking_pair_weights(loss) for name, loss in ranking_losses.items()},
        ranking,
        "score gap Δ = s_relevant − s_irrelevant",
        "How ranking losses weight a pair",
    )
    return [metric, ranking]


if __name__ == "__main__":
    for written in write_pair_weight_figures(sys.argv[1] if len(sys.argv) > 1 else "docs/figures"):
        print(f"wrote {written}")
