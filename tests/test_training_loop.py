"""The shared training loop: the update budget, validation-selected state, early stopping, checkpoint and resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pairloss.training.loop import ClassBalancedBatches, FitConfig, fit, optimizer_step, torch_threads


def _problem(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(64)
    model = nn.Linear(3, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.05), x, y


def _update(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
    def update(step: int) -> float:
        index = torch.randperm(64)[:16]  # draws from torch's generator: replayed through the checkpointed state
        return optimizer_step(optimizer, lambda: (model(x[index]).squeeze(1) - y[index]).pow(2).mean())

    return update


def test_budget_of_updates_and_losses() -> None:
    model, optimizer, x, y = _problem()
    result = fit(model, optimizer, _update(model, optimizer, x, y), FitConfig(updates=40))
    assert result.updates == result.best_update == 40 and len(result.losses) == 40
    assert result.losses[-1] < result.losses[0] and result.best_score is None


def test_keeps_the_best_validated_state_and_stops_early() -> None:
    model, optimizer, x, y = _problem()
    scores = iter([0.1, 0.5, 0.3, 0.2, 0.9])
    states: list[torch.Tensor] = []

    def validate() -> float:
        assert not model.training and not torch.is_grad_enabled()
        states.append(model.weight.detach().clone())
        return next(scores)

    config = FitConfig(updates=50, validate_every=5, patience=2)
    result = fit(model, optimizer, _update(model, optimizer, x, y), config, validate=validate)
    assert result.stopped_early and result.updates == 20
    assert result.validation == [(5, 0.1), (10, 0.5), (15, 0.3), (20, 0.2)]
    assert result.best_update == 10 and result.best_score == 0.5
    assert torch.equal(model.weight, states[1]) and model.training


def test_nan_validation_is_never_the_best() -> None:
    model, optimizer, x, y = _problem()
    scores = iter([float("nan"), 0.2])
    result = fit(
        model,
        optimizer,
        _update(model, optimizer, x, y),
        FitConfig(updates=10, validate_every=5),
        validate=lambda: next(scores),
    )
    assert result.best_update == 10 and result.best_score == 0.2


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path) -> None:
    config = FitConfig(updates=30, validate_every=10, checkpoint_every=7)
    model, optimizer, x, y = _problem()
    reference = fit(model, optimizer, _update(model, optimizer, x, y), config, validate=lambda: -float(model.bias))
    expected = model.weight.detach().clone()

    model, optimizer, x, y = _problem()
    update = _update(model, optimizer, x, y)

    def crashing(step: int) -> float:
        if step == 17:
            raise KeyboardInterrupt
        return update(step)

    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(model, optimizer, crashing, config, validate=lambda: -float(model.bias), checkpoint=path)
    assert path.exists()
    model, optimizer, x, y = _problem()  # fresh objects with other weights: the state comes from the file
    with torch.no_grad():
        model.weight.fill_(7.0)
    torch.manual_seed(123)
    resumed = fit(
        model, optimizer, _update(model, optimizer, x, y), config, validate=lambda: -float(model.bias), checkpoint=path
    )
    assert resumed.resumed_from == 14 and resumed.updates == 30
    assert torch.allclose(model.weight, expected) and resumed.best_update == reference.best_update
    assert not path.exists()


def test_class_balanced_batches_are_a_function_of_the_step() -> None:
    labels = torch.arange(10).repeat_interleave(6)
    batches = ClassBalancedBatches(labels, m_per_class=3, batch_size=12, seed=4)
    sequence = [batches(step) for step in range(12)]
    fresh = ClassBalancedBatches(labels, m_per_class=3, batch_size=12, seed=4)
    assert torch.equal(fresh(9), sequence[9]) and torch.equal(fresh(2), sequence[2])
    for index in sequence:
        counts = torch.bincount(labels[index], minlength=10)
        assert index.numel() == 12 and set(counts[counts > 0].tolist()) == {3}
    assert batches.batches_per_epoch == 5
    assert not torch.equal(ClassBalancedBatches(labels, 3, 12, seed=5)(0), sequence[0])
    with pytest.raises(ValueError, match="step"):
        batches(-1)
    with pytest.raises(ValueError, match="labels"):
        ClassBalancedBatches(torch.zeros(2, 2, dtype=torch.long), 2, 4)


def test_threads_are_restored_and_configs_checked() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"), torch_threads(0):
        pass
    for bad in (
        {"updates": 0},
        {"updates": 5, "validate_every": -1},
        {"updates": 5, "patience": 0},
        {"updates": 5, "checkpoint_every": 0},
    ):
        with pytest.raises(ValueError):
            FitConfig(**bad)
    _, optimizer, *_ = _problem()
    with pytest.raises(ValueError, match="modules"):
        fit({}, optimizer, lambda s: 0.0, FitConfig(updates=1))


def test_shuffled_batches_are_permutations_addressed_by_step() -> None:
    from pairloss.training.loop import ShuffledBatches

    batches = ShuffledBatches(10, 3, seed=4)
    assert batches.batches_per_epoch == 3
    epoch = torch.cat([batches(s) for s in range(3)])
    assert len(epoch) == 9 and len(set(epoch.tolist())) == 9  # no repeat within an epoch, the remainder dropped
    fresh = ShuffledBatches(10, 3, seed=4)
    assert torch.equal(fresh(4), batches(4)) and torch.equal(fresh(1), batches(1))  # independent of earlier draws
    assert not torch.equal(torch.cat([batches(s) for s in range(3, 6)]), epoch)
    assert not torch.equal(ShuffledBatches(10, 3, seed=5)(0), batches(0))
    assert ShuffledBatches(2, 5)(0).tolist() in ([0, 1], [1, 0])
    with pytest.raises(ValueError, match="step"):
        batches(-1)
    with pytest.raises(ValueError, match="batch_size"):
        ShuffledBatches(10, 0)
