"""The bundled real data set: scikit-learn's 8×8 handwritten digits, split for open-set retrieval.

Open-set means the test classes are never seen in training: by default the model trains on digits 0–4 and is
evaluated by retrieving digits 5–9 among themselves (query = gallery, self excluded), as in deep metric learning
benchmarks (CUB, Cars196, SOP), where train and test classes are disjoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import Tensor

__all__ = ["OpenSetSplit", "open_set_digits"]


@dataclass(frozen=True)
class OpenSetSplit:
    """Train and test sets with disjoint classes. Features are float32 in [0, 1]; ``*_images`` are ``[N, 1, 8, 8]``."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor

    @property
    def train_images(self) -> Tensor:
        return self.train_x.reshape(-1, 1, 8, 8)

    @property
    def test_images(self) -> Tensor:
        return self.test_x.reshape(-1, 1, 8, 8)

    @property
    def num_features(self) -> int:
        return int(self.train_x.shape[1])


def open_set_digits(train_classes: Sequence[int] = (0, 1, 2, 3, 4)) -> OpenSetSplit:
    """Digits split by class: ``train_classes`` for training, the other digits for open-set testing.

    Returns 1797 samples in all (about 180 per class), pixel values scaled from 0..16 to 0..1.
    """
    train_set = set(int(c) for c in train_classes)
    if not train_set or not train_set < set(range(10)):
        raise ValueError(f"train_classes must be a non-empty proper subset of 0..9, got {sorted(train_set)}")
    digits = load_digits()
    x = torch.from_numpy((digits.data / 16.0).astype(np.float32))
    y = torch.from_numpy(digits.target.astype(np.int64))
    is_train = torch.tensor([int(label) in train_set for label in digits.target])
    return OpenSetSplit(x[is_train], y[is_train], x[~is_train], y[~is_train])
