"""Contrastive, multi-similarity and triplet (all triplets) losses: pairloss vs pytorch-metric-learning.

Input of every case: ``N`` float32 embeddings of dimension ``D = 128`` drawn from a standard normal, labels
drawn uniformly from 100 classes, the same seed for both libraries; each loss with its (shared) default
arguments.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch

from benchmarks._embeddings import embedding_cases, random_batch
from benchmarks.measure import Case

NAME = "metric_losses"
TITLE = "Metric-learning losses, forward + backward, D = 128, 100 classes, float32"

#: Loss name -> class name, identical in both libraries (pairloss follows PML's names and defaults).
LOSSES = {
    "contrastive": "ContrastiveLoss",
    "multi_similarity": "MultiSimilarityLoss",
    "triplet_all": "TripletMarginLoss",
}
IMPLEMENTATIONS = ("pairloss", "pytorch-metric-learning")
SIZES = (2048, 8192, 16384, 32768)
QUICK_SIZES = (1024, 2048)


def cases(quick: bool) -> list[Case]:
    """Every (N, loss, implementation): smallest sizes first, the two implementations of one size together."""
    return embedding_cases(__name__, LOSSES, IMPLEMENTATIONS, QUICK_SIZES if quick else SIZES)


def loss_class(implementation: str, loss: str) -> Callable[[], torch.nn.Module]:
    place = "pairloss" if implementation == "pairloss" else "pytorch_metric_learning.losses"
    cls = getattr(importlib.import_module(place), LOSSES[loss], None)
    if cls is None:
        raise ImportError(f"{implementation} has no {LOSSES[loss]}")
    return cls


def setup(case: Case) -> tuple[Callable[[], torch.Tensor], torch.Tensor]:
    """Build the inputs and the loss of ``case``; return ``(step, embeddings)``."""
    params: dict[str, Any] = case.params
    embeddings, labels = random_batch(params)
    loss_fn = loss_class(case.implementation, case.loss)()
    return (lambda: loss_fn(embeddings, labels)), embeddings
