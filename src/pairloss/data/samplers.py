"""Batch samplers for pairwise losses: a batch needs several samples of each class to have positive pairs."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

__all__ = ["MPerClassSampler"]


class MPerClassSampler:
    """Yields batches of indices with ``m`` samples from each of ``batch_size // m`` random classes.

    Like PML's ``MPerClassSampler``: classes with fewer than ``m`` samples are drawn with replacement. One epoch has
    ``len(labels) // batch_size`` batches. Iterating again gives new batches; ``seed`` makes the sequence repeatable.
    """

    def __init__(self, labels: Tensor, m: int, batch_size: int, seed: int = 0) -> None:
        if m < 1:
            raise ValueError(f"m must be >= 1, got {m}")
        if batch_size < m or batch_size % m:
            raise ValueError(f"batch_size must be a positive multiple of m={m}, got {batch_size}")
        labels_np = labels.detach().cpu().numpy()
        self.classes = np.unique(labels_np)
        self.m = m
        self.batch_size = batch_size
        self.classes_per_batch = min(batch_size // m, len(self.classes))
        self.by_class = {c: np.flatnonzero(labels_np == c) for c in self.classes}
        self.num_batches = max(1, len(labels_np) // batch_size)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[Tensor]:
        for _ in range(self.num_batches):
            chosen = self.rng.choice(self.classes, size=self.classes_per_batch, replace=False)
            parts = [
                self.rng.choice(self.by_class[c], size=self.m, replace=len(self.by_class[c]) < self.m) for c in chosen
            ]
            yield torch.from_numpy(np.concatenate(parts))
