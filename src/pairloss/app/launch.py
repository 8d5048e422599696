"""Data-parallel training of an embedding on the digits with ``DistributedDataParallel`` (one process or ``torchrun``).

Under ``torchrun --nproc-per-node P`` (``WORLD_SIZE > 1`` in the environment) every rank draws the same global
batches from a seeded :class:`~pairloss.data.MPerClassBatchSampler`, keeps its 1/P slice, and the loss is wrapped in
:class:`~pairloss.training.distributed.CrossRankLoss` inside ``DistributedDataParallel``: the update equals the
single-process update on the global batch (the tests check the parameters after training).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pairloss.app.progress import RichReporter
from pairloss.data import MPerClassBatchSampler, open_set_digits
from pairloss.models import MLPEmbedder
from pairloss.training.distributed import CrossRankLoss, process_group_from_environment
from pairloss.training.reporting import Reporter

__all__ = ["TrainResult", "train_digits"]


@dataclass
class TrainResult:
    """The trained model, the metrics on the unseen digits (rank 0 only) and the world size used."""

    model: nn.Module
    metrics: dict[str, float]
    world_size: int


def train_digits(
    loss: str = "contrastive",
    epochs: int = 10,
    batch_size: int = 64,
    m_per_class: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    reporter: Reporter | None = None,
) -> TrainResult:
    """Train an MLP (no batch-norm, so the split across ranks does not change the result) on digits 0–4.

    Returns the model and, on rank 0, retrieval metrics on digits 5–9. Works unchanged under ``torchrun``: a process
    group this call starts from the launcher's environment is destroyed before it returns; one that already exists
    is used and left to its owner.
    """
    from pairloss.app.demo import DEMO_LOSSES, demo_loss_name
    from pairloss.metrics import retrieval

    loss = demo_loss_name(loss)
    with process_group_from_environment():
        distributed = dist.is_initialized()
        rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        device = torch.device(f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
        split = open_set_digits()
        x, y = split.train_x.to(device, dtype), split.train_y.to(device)
        torch.manual_seed(seed)
        model: nn.Module = MLPEmbedder(split.num_features, 32, batch_norm=False).to(device, dtype)
        criterion = DEMO_LOSSES[loss](int(y.max()) + 1, 32).to(device, dtype)
        trained = model
        if distributed:
            model = DistributedDataParallel(model)
        loss_fn = CrossRankLoss(criterion)
        optimizer = torch.optim.Adam([*model.parameters(), *criterion.parameters()], lr=lr)
        reporter = reporter or (RichReporter() if rank == 0 else Reporter.silent())
        for epoch in reporter.track(range(epochs), f"training {loss} on {world} process(es)"):
            for batch in MPerClassBatchSampler(split.train_y, m_per_class, batch_size, seed=seed + epoch):
                local = batch.tensor_split(world)[rank].to(device)
                value = loss_fn(model(x[local]), y[local])
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
        if distributed:
            # DistributedDataParallel sits in a reference cycle: collect it now, while the process group it reduces
            # over is alive, rather than at some later collection or during interpreter exit (where gloo aborts).
            del model
            gc.collect()
    metrics: dict[str, float] = {}
    if rank == 0:
        trained.eval()
        with torch.no_grad():
            metrics = retrieval(trained(split.test_x.to(device, dtype)).float().cpu(), split.test_y, k=(1, 2, 4, 8))
    return TrainResult(trained, metrics, world)
