"""Pairwise similarities and distances: the second of the four parts of a pairwise loss.

Each object turns two sets of vectors into a matrix of scores ``S[i, j] = s(q_i, r_j)``. The work is split in two
steps so that the row-block engine can recompute blocks cheaply:

* :meth:`BaseSimilarity.prepare` maps each embedding on its own (e.g. L2 normalisation), O(N·D), outside the engine;
* :meth:`BaseSimilarity.pairwise` scores a block of prepared queries against all prepared references, O(b·M·D).

``is_inverted`` follows pytorch-metric-learning: ``True`` for similarities (larger = closer), ``False`` for
distances (smaller = closer). Class names and constructor arguments mirror PML's ``distances`` module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "BaseSimilarity",
    "CosineSimilarity",
    "DotProductSimilarity",
    "LpDistance",
    "NegSquaredEuclideanSimilarity",
]


class BaseSimilarity(ABC):
    """A pairwise score between embeddings: ``prepare`` each vector, then ``pairwise`` on blocks."""

    is_inverted: bool = True

    def __init__(self, normalize_embeddings: bool = True) -> None:
        self.normalize_embeddings = normalize_embeddings

    def prepare(self, embeddings: Tensor) -> Tensor:
        """Per-vector transform applied once before any pair is scored (L2 normalisation by default)."""
        if self.normalize_embeddings:
            return F.normalize(embeddings, p=2, dim=1)
        return embeddings

    @abstractmethod
    def pairwise(self, query: Tensor, reference: Tensor) -> Tensor:
        """Scores ``[b, M]`` between prepared ``query [b, D]`` and prepared ``reference [M, D]``."""

    def __call__(self, query: Tensor, reference: Tensor | None = None) -> Tensor:
        """The full matrix ``[N, M]`` (``reference`` defaults to ``query``). Dense: for small inputs and tests."""
        q = self.prepare(query)
        r = q if reference is None else self.prepare(reference)
        return self.pairwise(q, r)

    def margin(self, x: Tensor | float, y: Tensor | float) -> Tensor:
        """How far ``x`` is beyond ``y`` on the "farther" side: ``x − y`` for distances, ``y − x`` for similarities.

        The same convention as PML's ``BaseDistance.margin``: ``relu(margin(d_pos, m))`` penalises a positive pair
        farther than ``m`` whatever the direction of the score.
        """
        difference = y - x if self.is_inverted else x - y
        return torch.as_tensor(difference)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(normalize_embeddings={self.normalize_embeddings})"


class CosineSimilarity(BaseSimilarity):
    """``s(q, r) = q·r / (‖q‖‖r‖)``: the dot product of L2-normalised embeddings (PML's ``CosineSimilarity``)."""

    is_inverted = True

    def __init__(self) -> None:
        super().__init__(normalize_embeddings=True)

    def pairwise(self, query: Tensor, reference: Tensor) -> Tensor:
        return query @ reference.T

    def __repr__(self) -> str:
        return "CosineSimilarity()"


class DotProductSimilarity(BaseSimilarity):
    """``s(q, r) = q·r`` on raw embeddings by default (PML's ``DotProductSimilarity``)."""

    is_inverted = True

    def __init__(self, normalize_embeddings: bool = False) -> None:
        super().__init__(normalize_embeddings=normalize_embeddings)

    def pairwise(self, query: Tensor, reference: Tensor) -> Tensor:
        return query @ reference.T


class NegSquaredEuclideanSimilarity(BaseSimilarity):
    """``s(q, r) = −‖q − r‖²`` computed as ``2 q·r − ‖q‖² − ‖r‖²`` (one matmul, no ``[b, M, D]`` tensor)."""

    is_inverted = True

    def __init__(self, normalize_embeddings: bool = False) -> None:
        super().__init__(normalize_embeddings=normalize_embeddings)

    def pairwise(self, query: Tensor, reference: Tensor) -> Tensor:
        return -_squared_euclidean(query, reference)


class LpDistance(BaseSimilarity):
    """``d(q, r) = ‖q − r‖_p ** power`` on L2-normalised embeddings by default (PML's ``LpDistance``).

    Computed by ``torch.cdist`` on the block (one matmul and a fused backward for ``p = 2``, a zero gradient at
    zero distance); ``power = 2`` with ``p = 2`` uses ``‖q‖² + ‖r‖² − 2 q·r`` clamped at 0 and skips the root.
    """

    is_inverted = False

    def __init__(self, normalize_embeddings: bool = True, p: float = 2, power: float = 1) -> None:
        super().__init__(normalize_embeddings=normalize_embeddings)
        if p <= 0:
            raise ValueError(f"p must be > 0, got {p}")
        self.p = p
        self.power = power

    def pairwise(self, query: Tensor, reference: Tensor) -> Tensor:
        if self.p == 2 and self.power == 2:
            return _squared_euclidean(query, reference).clamp_min(0)
        distance = torch.cdist(query, reference, p=self.p)
        return distance if self.power == 1 else distance**self.power

    def __repr__(self) -> str:
        return f"LpDistance(normalize_embeddings={self.normalize_embeddings}, p={self.p}, power={self.power})"


def _squared_euclidean(query: Tensor, reference: Tensor) -> Tensor:
    q_norm = (query * query).sum(1, keepdim=True)
    r_norm = (reference * reference).sum(1)
    return q_norm + r_norm - 2 * (query @ reference.T)
