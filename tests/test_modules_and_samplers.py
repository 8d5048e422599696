"""One module style (generated from the functional form, registered explicitly) and the PML-compatible samplers."""

from __future__ import annotations

import inspect
from collections import Counter

import numpy as np
import pytest
import torch
from pytorch_metric_learning.samplers import MPerClassSampler as PMLMPerClassSampler
from torch import Tensor
from torch.utils.data import DataLoader, Sampler, TensorDataset

import pairloss
from pairloss.data import MPerClassBatchSampler, MPerClassSampler
from pairloss.losses import LOSSES, registered_losses
from pairloss.modules import EmbeddingLoss, PairLoss, Registry, loss_module
from pairloss.similarity import LpDistance


def scaled_distance_loss(
    embeddings: Tensor, labels: Tensor, *, scale: float = 2.0, distance: LpDistance = LpDistance()
) -> Tensor:
    """Mean scaled distance of the positive pairs (a loss written only for this test)."""
    d = distance(embeddings)
    positive = (labels[:, None] == labels[None, :]) & ~torch.eye(len(labels), dtype=torch.bool)
    return scale * d[positive].mean()


@loss_module(scaled_distance_loss, formula="s · mean_P d", paper="none", family="test")
class ScaledDistanceLoss(EmbeddingLoss):
    """A test loss."""


def test_generated_module_takes_the_functions_defaults_and_inputs() -> None:
    x, y = torch.randn(8, 3), torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    default = ScaledDistanceLoss()
    assert default.scale == 2.0 and isinstance(default.distance, LpDistance)
    assert default.distance is not ScaledDistanceLoss().distance  # default objects are copied per module
    assert ScaledDistanceLoss(3.0).scale == 3.0 and ScaledDistanceLoss(scale=4.0).scale == 4.0
    assert default(x, y).item() == pytest.approx(scaled_distance_loss(x, y).item())
    default.scale = 5.0  # attributes are read at call time
    assert default(x, labels=y).item() == pytest.approx(scaled_distance_loss(x, y, scale=5.0).item())
    assert list(inspect.signature(ScaledDistanceLoss).parameters) == ["scale", "distance"]
    assert list(inspect.signature(ScaledDistanceLoss.forward).parameters) == ["self", "embeddings", "labels"]
    assert "scale=5.0" in repr(default)
    with pytest.raises(TypeError):
        ScaledDistanceLoss(margin=1.0)
    with pytest.raises(TypeError):
        default(x, y, y)


def test_defining_a_loss_registers_nothing() -> None:
    assert "ScaledDistanceLoss" not in LOSSES
    assert "ScaledDistanceLoss" not in registered_losses()
    mine = Registry()
    mine.register(ScaledDistanceLoss)
    assert mine["ScaledDistanceLoss"] is ScaledDistanceLoss and len(mine) == 1
    with pytest.raises(ValueError, match="formula and a family"):
        mine.register(PairLoss)
    with pytest.raises(ValueError, match="PairLoss subclasses"):
        mine.register(int)  # type: ignore[arg-type]


def test_every_registered_loss_is_described() -> None:
    losses = registered_losses()
    assert len(losses) >= 50
    for name, cls in losses.items():
        assert cls.formula and cls.paper and cls.family, name
        assert cls.__doc__, name


def test_loss_module_rejects_functions_it_cannot_wrap() -> None:
    def no_default(x: Tensor, *, scale: float) -> Tensor:
        return x * scale

    with pytest.raises(ValueError, match="defaults"):
        loss_module(no_default, formula="f", paper="p", family="f")
    with pytest.raises(ValueError, match="no input"):
        loss_module(scaled_distance_loss, formula="f", paper="p", family="f", owned=("proxies",))


def test_m_per_class_sampler_is_a_pml_sampler() -> None:
    labels = torch.arange(200) % 10
    sampler = MPerClassSampler(labels, m=4, batch_size=32, length_before_new_iter=1000, seed=0)
    assert isinstance(sampler, Sampler)
    assert len(sampler) == 992 == len(PMLMPerClassSampler(labels, m=4, batch_size=32, length_before_new_iter=1000))
    indices = list(sampler)
    assert len(indices) == 992 and all(isinstance(i, int) for i in indices)
    dataset = TensorDataset(torch.randn(200, 3), labels)
    loader = DataLoader(dataset, batch_size=32, sampler=sampler)
    shapes = set()
    for _, batch_labels in loader:
        shapes.add(tuple(batch_labels.shape))
        counts = Counter(batch_labels.tolist())
        assert len(counts) == 8 and set(counts.values()) == {4}
    assert shapes == {(32,)}
    again = MPerClassSampler(labels, m=4, batch_size=32, length_before_new_iter=1000, seed=0)
    assert list(again) == indices


def test_m_per_class_sampler_without_batch_size_and_errors() -> None:
    labels = np.repeat(np.arange(5), 3)
    sampler = MPerClassSampler(labels, m=2, length_before_new_iter=37)
    assert len(sampler) == 30 == len(PMLMPerClassSampler(labels, m=2, length_before_new_iter=37))
    indices = list(sampler)
    for start in range(0, 30, 10):  # each pass: every class twice
        assert Counter(labels[indices[start : start + 10]].tolist()) == dict.fromkeys(range(5), 2)
    with pytest.raises(ValueError, match="multiple of m"):
        MPerClassSampler(labels, m=2, batch_size=5)
    with pytest.raises(ValueError, match="must be >= batch_size"):
        MPerClassSampler(labels, m=2, batch_size=12)
    with pytest.raises(ValueError, match="m must"):
        MPerClassSampler(labels, m=0)
    with pytest.raises(ValueError, match="1-D"):
        MPerClassSampler(np.zeros((3, 2)), m=1)


def test_m_per_class_batch_sampler_yields_batches() -> None:
    labels = torch.arange(60) % 6
    batches = list(MPerClassBatchSampler(labels, m=3, batch_size=12, seed=1))
    assert len(batches) == 5
    for batch in batches:
        assert batch.shape == (12,) and set(Counter(labels[batch].tolist()).values()) == {3}
    loader = DataLoader(TensorDataset(labels), batch_sampler=MPerClassBatchSampler(labels, m=3, batch_size=12))
    assert all(batch.shape == (12,) for (batch,) in loader)
    with pytest.raises(ValueError, match="multiple of m"):
        MPerClassBatchSampler(labels, m=5, batch_size=12)


def test_pairloss_exports_the_parts() -> None:
    for name in ("pairs", "links", "weights", "reducers", "miners", "pair_loss", "set_memory_budget", "memory_budget"):
        assert hasattr(pairloss, name)
    assert pairloss.CrossBatchMemory is pairloss.losses.CrossBatchMemory
