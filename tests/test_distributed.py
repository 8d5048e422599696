"""Cross-rank pairs: the loss and every parameter gradient on P gloo processes equal one process on the whole batch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import pairloss
from pairloss.training.distributed import CrossRankLoss, all_gather_with_grad, cross_rank_pairs

N, D, E = 23, 6, 4


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(N, D, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 4, (N,), generator=generator)
    y[:4] = torch.tensor([7, 8, 9, 10])  # rank 0's shard: four singleton classes, no positive pair on that rank
    return x, y


def _model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(D, 8), nn.Tanh(), nn.Linear(8, E)).double()


def _shards(world: int) -> list[slice]:
    cuts = [0, 4, 13, N] if world == 3 else [0, 9, N]  # unequal sizes on purpose
    return [slice(cuts[r], cuts[r + 1]) for r in range(world)]


def _losses() -> dict[str, tuple[nn.Module, str]]:
    def group_loss(scores: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        # a loss whose groups straddle ranks: per-group softmax cross-entropy on the first item of each group
        total = scores.new_zeros(())
        for g in groups.unique():
            s = scores[groups == g, 0]
            total = total + (torch.logsumexp(s, 0) - s[0])
        return total / groups.unique().numel()

    class GroupLoss(nn.Module):
        def forward(self, scores: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
            return group_loss(scores, groups)

    return {
        "contrastive-engine": (pairloss.ContrastiveLoss(neg_margin=0.9), "engine"),
        "contrastive-gather": (pairloss.ContrastiveLoss(neg_margin=0.9), "gather"),
        "groups-gather": (GroupLoss(), "gather"),
    }


def _compute(model: nn.Module, loss: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str) -> torch.Tensor:
    out = model(x)
    if name.startswith("groups"):
        return loss(out, y % 3)
    return loss(out, y)


def _worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    x, y = _data()
    shard = _shards(world)[rank]
    results = {}
    for name, (loss, mode) in _losses().items():
        model = _model()
        value = _compute(model, CrossRankLoss(loss, mode=mode), x[shard], y[shard], name)  # type: ignore[arg-type]
        value.backward()
        grads = []
        for p in model.parameters():
            assert p.grad is not None
            dist.all_reduce(p.grad)
            grads.append(p.grad / world)  # what DDP's averaging does
        results[name] = (value.detach(), grads)
    gathered, offset = all_gather_with_grad(x[shard])
    results["gather"] = (gathered, [torch.tensor(offset)])
    if rank == 0:
        torch.save(results, out_file)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_cross_rank_loss_and_gradients_equal_single_process(tmp_path: Path, world: int) -> None:
    out_file = tmp_path / "out.pt"
    mp.spawn(_worker, args=(world, str(tmp_path / "init"), str(out_file)), nprocs=world, join=True)
    results = torch.load(out_file)
    x, y = _data()
    assert torch.equal(results["gather"][0], x)
    for name, (loss, _) in _losses().items():
        model = _model()
        expected = _compute(model, loss, x, y, name)
        expected.backward()
        value, grads = results[name]
        torch.testing.assert_close(value, expected.detach(), rtol=0, atol=1e-6, msg=name)
        for got, p in zip(grads, model.parameters(), strict=True):
            torch.testing.assert_close(got, p.grad, rtol=0, atol=1e-6, msg=name)


def test_wrapper_is_the_plain_loss_without_a_process_group() -> None:
    x, y = _data()
    loss = pairloss.ContrastiveLoss()
    assert torch.equal(CrossRankLoss(loss)(x, y), loss(x, y))


def test_engine_mode_refuses_a_loss_it_cannot_split() -> None:
    with pytest.raises(ValueError, match="gather"):
        CrossRankLoss(nn.MSELoss(), mode="engine")
    with pytest.raises(ValueError, match="mode"):
        CrossRankLoss(nn.MSELoss(), mode="bogus")  # type: ignore[arg-type]


def test_cross_rank_pairs_needs_a_process_group() -> None:
    with pytest.raises(RuntimeError, match="process group"), cross_rank_pairs():
        pass


def _train_worker(rank: int, world: int, port: int, out_file: str) -> None:
    # the environment that `torchrun --nproc-per-node 2` gives each process: train_digits starts the group itself
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    from pairloss.app.launch import train_digits
    from pairloss.training.reporting import Reporter

    result = train_digits(epochs=1, batch_size=64, dtype=torch.float64, reporter=Reporter.silent())
    assert result.world_size == world
    assert not dist.is_initialized(), "the group train_digits started must be destroyed before it returns"
    if rank == 0:
        torch.save(result.model.state_dict(), out_file)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_ddp_training_on_two_processes_equals_one_process(tmp_path: Path) -> None:
    from pairloss.app.launch import train_digits
    from pairloss.training.reporting import Reporter

    out_file = tmp_path / "model.pt"
    mp.spawn(_train_worker, args=(2, _free_port(), str(out_file)), nprocs=2, join=True)
    distributed = torch.load(out_file)
    single = train_digits(epochs=1, batch_size=64, dtype=torch.float64, reporter=Reporter.silent())
    assert single.world_size == 1 and single.metrics["recall@1"] > 0
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(distributed[name], value, rtol=0, atol=1e-6, msg=name)
