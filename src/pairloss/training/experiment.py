"""``pairloss train CONFIG``: the training loop of the papers' real experiments, on one process or under torchrun.

One optimiser step per global batch. A local batch larger than ``train.chunk_size`` (image tasks) goes through the
multi-stage step (:func:`~pairloss.training.large_batch.large_batch_backward`: embed without autograd, loss and its
embedding gradient, re-embed chunk by chunk with autograd); a smaller one through a plain forward and backward.
Under ``torchrun --nproc-per-node P`` each process holds 1/P of every global batch, the loss is wrapped in
:class:`~pairloss.training.distributed.CrossRankLoss` (pairs across processes) and the parameter gradients are averaged
over the processes before the step, so the update is that of the global batch. Random draws inside the loss (SiMix)
are seeded per step, identically on every process.

Precision: ``32``; ``bf16`` (autocast to bfloat16 on CPU or CUDA); ``16`` (autocast to float16 with a gradient
scaler, CUDA only). The loss itself always runs in float32.

Outputs in ``out``: ``config.yaml`` (the resolved config), ``metrics.json`` (one entry per evaluation:
``{"epoch": e, "metrics": {...}}``), ``last.ckpt`` (model, loss, optimiser, schedule, gradient scaler, epoch and
history, written after every epoch) and ``tensorboard/`` (training loss and learning rate per step, metrics per
evaluation). When ``last.ckpt`` exists, the same command resumes from it (a config that differs in anything but the
number of epochs, the data location, the workers, the evaluation batch and interval, or the device is refused).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pairloss.training.distributed import CrossRankLoss, average_gradients, process_group_from_environment
from pairloss.training.large_batch import large_batch_backward
from pairloss.training.reporting import Reporter
from pairloss.training.tasks import Batch, RunContext, Task, build_task

__all__ = ["CHECKPOINT", "ExperimentResult", "run_experiment"]

#: The checkpoint file name inside ``out``.
CHECKPOINT = "last.ckpt"

#: Keys that may change between a run and its resumption.
_RESUMABLE = {
    "train.epochs",
    "train.eval_every",
    "train.device",
    "data.root",
    "data.workers",
    "eval.batch_size",
    "out",
    "description",
    "paper",
    "expected",
}

_AMP = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


@dataclass
class ExperimentResult:
    """The output folder, every evaluation so far (``[{"epoch": e, "metrics": {...}}]``, rank 0), the trained
    model, the epoch reached and the number of processes."""

    out: Path
    history: list[dict[str, Any]]
    model: nn.Module
    epochs: int
    world_size: int


def _device(choice: str, rank: int) -> torch.device:
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("train.device=cuda but CUDA is not available")
    local_rank = int(os.environ.get("LOCAL_RANK", rank % torch.cuda.device_count()))
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def _parameters(task: Task) -> list[nn.Parameter]:
    return [p for module in (task.model, task.loss) for p in module.parameters() if p.requires_grad]


def _optimizer(train: Any, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    decay = float(train.weight_decay)
    if train.no_bias_decay:
        groups: list[dict[str, Any]] = [
            {"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": params}]
    lr = float(train.lr)
    name = str(train.optimizer).lower()
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=decay)
    if name == "sgd":
        momentum = float(train.momentum)
        return torch.optim.SGD(
            groups, lr=lr, momentum=momentum, weight_decay=decay, nesterov=bool(train.nesterov) and momentum > 0
        )
    raise ValueError(f"train.optimizer must be adam, adamw or sgd, got {train.optimizer!r}")


def _schedule(train: Any, steps_per_epoch: int) -> Any:
    """The learning-rate factor of optimiser step ``i`` (0-based)."""
    kind = str(train.schedule)
    total = max(1, int(train.epochs) * steps_per_epoch)
    gamma, milestones = float(train.gamma), [int(m) for m in train.milestones]
    warmup, step_size = max(1, int(train.warmup_steps)), max(1, int(train.step_size))

    def factor(i: int) -> float:
        epoch = i // steps_per_epoch
        if kind == "constant":
            return 1.0
        if kind == "multistep":
            return gamma ** sum(epoch >= m for m in milestones)
        if kind == "step":
            return gamma ** (epoch // step_size)
        return min((i + 1) / warmup, (1 + math.cos(math.pi * i / total)) / 2)  # warmup_cosine

    if kind not in ("constant", "multistep", "step", "warmup_cosine"):
        raise ValueError(f"train.schedule must be constant, multistep, step or warmup_cosine, got {kind!r}")
    return factor


class _SeededLoss:
    """``loss(outputs, targets)`` with the random generator seeded by ``seed + step``: the same draws on every
    process (SiMix's mixing coefficients), and the loop's own random stream left untouched."""

    def __init__(self, loss: nn.Module, seed: int, device: torch.device) -> None:
        self.loss = loss
        self.seed = seed
        self.devices = [device] if device.type == "cuda" else []
        self.step = 0

    def __call__(self, outputs: Tensor, targets: Tensor) -> Tensor:
        with torch.random.fork_rng(devices=self.devices):
            torch.manual_seed(self.seed * 1_000_003 + self.step)
            value: Tensor = self.loss(outputs, targets)
        return value


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


def _check_resumable(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    old, new = _flatten(saved), _flatten(current)
    changed = sorted(k for k in set(old) | set(new) if k not in _RESUMABLE and old.get(k) != new.get(k))
    if changed:
        details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:6])
        raise ValueError(
            f"{path} was written by a different config ({details}); use another out folder or delete the checkpoint"
        )


def _write_json(path: Path, payload: Any) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(payload, indent=2) + "\n")
    temporary.replace(path)


class _Step:
    """One optimiser step on a local batch: plain or multi-stage, any precision, gradients averaged over ranks."""

    def __init__(self, task: Task, ctx: RunContext, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        self.task, self.ctx = task, ctx
        self.optimizer, self.scheduler = optimizer, scheduler
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=ctx.config.train.precision == "16")
        self.loss_fn = _SeededLoss(CrossRankLoss(task.loss), int(ctx.config.train.seed), ctx.device)
        self.params = _parameters(task)
        self.chunk_size = int(ctx.config.train.chunk_size)

    def __call__(self, batch: Batch, step: int) -> float:
        self.loss_fn.step = step
        self.optimizer.zero_grad(set_to_none=True)
        if self.task.multi_stage and len(batch.targets) > self.chunk_size:
            result = large_batch_backward(
                self.task.model,
                batch.inputs[0],
                batch.targets,
                self.loss_fn,
                chunk_size=self.chunk_size,
                amp_dtype=self.ctx.amp_dtype,
                scale_loss=self.scaler.scale if self.scaler.is_enabled() else None,
            )
            value = result.loss
        else:
            with self.ctx.autocast():
                outputs = self.task.model(*batch.inputs)
            loss = self.loss_fn(outputs.float(), batch.targets)
            self.scaler.scale(loss).backward()
            value = float(loss.detach())
        average_gradients(self.params)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return value


def run_experiment(config: Any, reporter: Reporter | None = None) -> ExperimentResult:
    """Train and evaluate as ``config`` (from :func:`~pairloss.training.config.load_config`) says; see the module
    docstring for the outputs. Works unchanged under ``torchrun``."""
    from omegaconf import OmegaConf

    out = Path(config.out)
    resolved: dict[str, Any] = OmegaConf.to_container(config, resolve=True)  # type: ignore[assignment]
    with process_group_from_environment():
        distributed = dist.is_initialized()
        rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        report = (reporter or Reporter.silent()) if rank == 0 else Reporter.silent()
        device = _device(str(config.train.device), rank)
        precision = str(config.train.precision)
        if precision == "16" and device.type != "cuda":
            raise ValueError("train.precision=16 needs CUDA (float16 with a gradient scaler); use bf16 on CPU")
        ctx = RunContext(config, device, rank, world, _AMP[precision])
        torch.manual_seed(int(config.train.seed))  # the same initial model on every process
        task = build_task(ctx)
        optimizer = _optimizer(config.train, _parameters(task))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config.train, task.steps_per_epoch))
        step = _Step(task, ctx, optimizer, scheduler)
        done, global_step, history = 0, 0, []
        checkpoint = out / CHECKPOINT
        if checkpoint.is_file():
            state = torch.load(checkpoint, map_location=device, weights_only=True)
            _check_resumable(state["config"], resolved, checkpoint)
            task.model.load_state_dict(state["model"])
            task.loss.load_state_dict(state["loss"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            step.scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["rng"])
            done, global_step, history = int(state["epoch"]), int(state["step"]), list(state["history"])
            report.log(f"resuming from {checkpoint}: {done} of {int(config.train.epochs)} epochs done")
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(config, out / "config.yaml", resolve=True)
        writer = _tensorboard(out) if rank == 0 else None
        epochs = int(config.train.epochs)
        if done >= epochs:
            report.log(f"{checkpoint} has already trained {done} epochs (train.epochs={epochs}): nothing to do")
        for epoch in report.track(range(done, epochs), f"training on {world} process(es)"):
            task.model.train()
            for batch in report.track(task.batches(epoch), f"epoch {epoch + 1}", total=task.steps_per_epoch):
                value = step(batch, global_step)
                if writer is not None:
                    writer.add_scalar("train/loss", value, global_step)
                    writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], global_step)
                global_step += 1
            if (epoch + 1) % int(config.train.eval_every) == 0 or epoch + 1 == epochs:
                metrics = task.evaluate()
                if metrics is not None:
                    history.append({"epoch": epoch + 1, "metrics": {k: float(v) for k, v in metrics.items()}})
                    _write_json(out / "metrics.json", history)
                    report.log(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
                    if writer is not None:
                        for name, value in metrics.items():
                            writer.add_scalar(f"eval/{name}", value, epoch + 1)
            done = epoch + 1
            if rank == 0:
                state = {
                    "config": resolved,
                    "epoch": done,
                    "step": global_step,
                    "history": history,
                    "model": task.model.state_dict(),
                    "loss": task.loss.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": step.scaler.state_dict(),
                    "rng": torch.get_rng_state(),
                }
                torch.save(state, checkpoint.with_suffix(".tmp"))
                checkpoint.with_suffix(".tmp").replace(checkpoint)
            if distributed:
                dist.barrier()
        if writer is not None:
            writer.close()
    return ExperimentResult(out, history, task.model, done, world)


def _tensorboard(out: Path) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tensorboard"))
