"""Samplers for pairwise losses: a batch needs several samples of each class to have positive pairs.

* :class:`MPerClassSampler` is pytorch-metric-learning's: a ``torch.utils.data.Sampler`` of sample indices, given
  to a ``DataLoader`` as ``sampler=`` (with the loader's ``batch_size``), with PML's signature
  ``(labels, m, batch_size=None, length_before_new_iter=100000)``;
* :class:`MPerClassBatchSampler` yields whole batches of indices (one index tensor per batch), for training loops
  that index tensors directly, or as a ``DataLoader``'s ``batch_sampler=``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

__all__ = ["MPerClassBatchSampler", "MPerClassSampler"]


def _labels_array(labels: Tensor | Sequence[int] | np.ndarray) -> np.ndarray:
    array = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"labels must be 1-D class ids, got shape {array.shape}")
    if array.size == 0:
        raise ValueError("labels is empty")
    return array


def _check_m(m: int) -> int:
    if isinstance(m, bool) or int(m) != m or m < 1:
        raise ValueError(f"m must be an integer >= 1, got {m!r}")
    return int(m)


class MPerClassSampler(Sampler[int]):
    """Sample indices ``m`` per class, PML's ``MPerClassSampler``: a ``torch.utils.data.Sampler``.

    Each round shuffles the classes and, for the first ``batch_size // m`` of them (all of them when
    ``batch_size`` is ``None``), draws ``m`` indices of that class (with replacement for a class with fewer than
    ``m`` samples). Rounds are concatenated into a list of ``length_before_new_iter`` indices (rounded down to a
    multiple of ``batch_size``, or of one pass over the classes), which is one epoch: pass the sampler as
    ``DataLoader(dataset, batch_size=batch_size, sampler=sampler)`` and every batch holds ``batch_size // m``
    classes with ``m`` samples each.

    ``seed`` (not in PML) makes the sequence repeatable; each iteration continues the same random stream.
    """

    def __init__(
        self,
        labels: Tensor | Sequence[int] | np.ndarray,
        m: int,
        batch_size: int | None = None,
        length_before_new_iter: int = 100000,
        *,
        seed: int | None = None,
    ) -> None:
        array = _labels_array(labels)
        self.m_per_class = _check_m(m)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.classes = np.unique(array)
        self.labels_to_indices = {c: np.flatnonzero(array == c) for c in self.classes}
        self.length_of_single_pass = self.m_per_class * len(self.classes)
        self.list_size = int(length_before_new_iter)
        if self.batch_size is None:
            if self.length_of_single_pass < self.list_size:
                self.list_size -= self.list_size % self.length_of_single_pass
        else:
            if self.batch_size < 1 or self.batch_size % self.m_per_class:
                raise ValueError(f"batch_size must be a positive multiple of m={self.m_per_class}, got {batch_size}")
            if self.length_of_single_pass < self.batch_size:
                raise ValueError(
                    f"m * (number of classes) = {self.length_of_single_pass} must be >= batch_size = {batch_size}"
                )
            if self.list_size < self.batch_size:
                raise ValueError(f"length_before_new_iter must be >= batch_size, got {length_before_new_iter}")
            self.list_size -= self.list_size % self.batch_size
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.list_size

    def __iter__(self) -> Iterator[int]:
        per_round = self.length_of_single_pass if self.batch_size is None else self.batch_size
        n_rounds = max(1, -(-self.list_size // per_round))
        classes_per_round = len(self.classes) if self.batch_size is None else self.batch_size // self.m_per_class
        indices = []
        for _ in range(n_rounds):
            order = self.rng.permutation(self.classes)[:classes_per_round]
            for c in order:
                members = self.labels_to_indices[c]
                indices.append(self.rng.choice(members, size=self.m_per_class, replace=len(members) < self.m_per_class))
        return iter(np.concatenate(indices)[: self.list_size].tolist())


class MPerClassBatchSampler:
    """Batches of indices with ``m`` samples from each of ``batch_size // m`` random classes.

    Classes with fewer than ``m`` samples are drawn with replacement. One epoch has ``len(labels) // batch_size``
    batches (at least one); each is a ``LongTensor`` of ``batch_size`` indices when there are enough classes.
    Iterating again gives new batches; ``seed`` makes the sequence repeatable. Usable as a ``DataLoader``'s
    ``batch_sampler=``.
    """

    def __init__(self, labels: Tensor | Sequence[int] | np.ndarray, m: int, batch_size: int, seed: int = 0) -> None:
        labels_np = _labels_array(labels)
        self.m = _check_m(m)
        if batch_size < m or batch_size % m:
            raise ValueError(f"batch_size must be a positive multiple of m={m}, got {batch_size}")
        self.classes = np.unique(labels_np)
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
