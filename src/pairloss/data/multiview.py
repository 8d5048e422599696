"""Synthetic multi-view data with a known latent: ``n`` objects, each seen through ``k`` random nonlinear sensors.

Object ``i`` has a class ``y_i`` and a latent ``h_i = μ_{y_i} + σ_w ξ_i`` (``ξ_i ~ N(0, I)``), and sensor ``l``
observes

    x_l[i] = W2_l · tanh(W1_l · h_i + b_l) + σ_n ν_{l,i}

with random weights per sensor and fresh noise per observation. The views of one object share only ``h_i``, so an
encoder per view that aligns the views recovers (a nonlinear function of) the latent, and the classes are what a
linear probe checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pairloss._validation import check_positive

__all__ = ["MultiViewData", "synthetic_multiview"]


@dataclass(frozen=True)
class MultiViewData:
    """``views[l, i]``: object ``i`` through sensor ``l`` (``[k, n, input_dim]``); ``labels``, ``latent``: the truth."""

    views: Tensor
    labels: Tensor
    latent: Tensor

    @property
    def n_views(self) -> int:
        return int(self.views.shape[0])

    def __len__(self) -> int:
        return int(self.views.shape[1])

    def subset(self, index: Tensor) -> MultiViewData:
        """The objects ``index`` (all views)."""
        return MultiViewData(self.views[:, index], self.labels[index], self.latent[index])


def synthetic_multiview(
    n_objects: int,
    n_views: int,
    *,
    n_classes: int = 10,
    latent_dim: int = 8,
    input_dim: int = 32,
    hidden_dim: int = 64,
    class_spread: float = 1.0,
    within_class: float = 0.6,
    noise: float = 0.3,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> MultiViewData:
    """Draw ``n_objects`` objects seen through ``n_views`` random sensors (see the module docstring).

    Args:
        n_objects, n_views: ``n`` and ``k``.
        n_classes: latent classes (class means ``μ_c ~ N(0, class_spread² I)``).
        latent_dim, input_dim, hidden_dim: sizes of ``h``, ``x`` and the sensor's hidden layer.
        within_class: ``σ_w``, the spread of ``h`` around its class mean.
        noise: ``σ_n``, the observation noise of every sensor.
        generator: the random source (sensors, objects and noise all come from it).
    """
    if n_objects < 1 or n_views < 1 or n_classes < 1:
        raise ValueError(f"need n_objects, n_views, n_classes >= 1, got {n_objects}, {n_views}, {n_classes}")
    for value, name in ((latent_dim, "latent_dim"), (input_dim, "input_dim"), (hidden_dim, "hidden_dim")):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    check_positive(class_spread, "class_spread")
    check_positive(within_class, "within_class", allow_zero=True)
    check_positive(noise, "noise", allow_zero=True)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator, dtype=dtype)

    means = class_spread * randn(n_classes, latent_dim)
    labels = torch.randint(n_classes, (n_objects,), generator=generator)
    latent = means[labels] + within_class * randn(n_objects, latent_dim)
    views = []
    for _ in range(n_views):
        w1 = randn(latent_dim, hidden_dim) * (2.0 / latent_dim) ** 0.5
        b1 = 0.5 * randn(hidden_dim)
        w2 = randn(hidden_dim, input_dim) / hidden_dim**0.5
        views.append(torch.tanh(latent @ w1 + b1) @ w2 + noise * randn(n_objects, input_dim))
    return MultiViewData(torch.stack(views), labels, latent)
