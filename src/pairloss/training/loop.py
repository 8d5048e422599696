"""The one training loop of the library: a budget of optimiser updates, validation with early stopping,
checkpoint and resume, a progress bar and a thread setting.

Every recipe trains through :func:`fit`; what differs between recipes (the batch, the forward pass, the loss) is
the ``update`` function it passes, which performs **one optimiser update** and returns the loss value::

    batches = ClassBalancedBatches(labels, m_per_class=4, batch_size=128, seed=seed)

    def update(step: int) -> float:                   # step = 0, 1, ..., config.updates - 1
        index = batches(step)                         # the same batch for the same step, also after a resume
        return optimizer_step(optimizer, lambda: loss_fn(model(x[index]), labels[index]))

    result = fit({"model": model, "loss": loss_fn}, optimizer, update,
                 FitConfig(updates=600, validate_every=50, patience=4),
                 validate=lambda: validation_map_at_r(model), checkpoint=path, reporter=reporter)

Budget in updates, not epochs: compared methods and factors (batch size, an added loss term) get the same number
of optimiser updates. With ``validate``, the loop scores the model every ``validate_every`` updates (and after the
last one), keeps the state with the best score (higher is better) and restores it at the end; ``patience`` stops
after that many validations without improvement. The kept model is therefore the validation-selected checkpoint,
and ``FitResult.best_update`` says which.

Resume: with ``checkpoint``, the modules, the optimiser (and scheduler), the best state, the history and torch's
random state are saved every ``checkpoint_every`` updates; a later call with the same file continues from the saved
update. The update function must therefore depend only on its ``step`` argument and the restored state
(:class:`ClassBalancedBatches` draws the batch of a step from the step number), so that an interrupted and resumed
run makes the same updates as an uninterrupted one. The file is deleted when the run completes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from pairloss.data.samplers import MPerClassBatchSampler
from pairloss.training.reporting import Reporter

__all__ = [
    "ClassBalancedBatches",
    "FitConfig",
    "FitResult",
    "ShuffledBatches",
    "fit",
    "optimizer_step",
    "torch_threads",
]

T = TypeVar("T")


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` (``None``: leave the setting alone), then restore it.

    Small models train fastest on one thread of a shared CPU: every intra-op parallel kernel waits for all its
    threads, and a busy second core makes each wait a scheduler slice.
    """
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ClassBalancedBatches:
    """Class-balanced batches of indices addressed by update number: ``batches(step)`` is the batch of ``step``.

    Each batch holds ``m_per_class`` samples of each of ``batch_size // m_per_class`` random classes (classes with
    fewer samples are drawn with replacement), as in PML's ``MPerClassSampler``. Batches are grouped in epochs of
    ``len(labels) // batch_size`` batches (at least one); epoch ``e`` is drawn from a generator seeded with
    ``(seed, e)``, so the batch of a step does not depend on which steps were drawn before (a resumed run draws the
    same batches). This is the only place where the training code samples classes.
    """

    def __init__(self, labels: Tensor, m_per_class: int, batch_size: int, seed: int = 0) -> None:
        if labels.ndim != 1 or labels.numel() == 0:
            raise ValueError(f"labels must be a non-empty 1-D tensor, got shape {tuple(labels.shape)}")
        self.labels = labels.detach().cpu()
        self.m_per_class = m_per_class
        self.batch_size = batch_size
        self.seed = seed
        self.batches_per_epoch = len(self._sampler(0))
        self._epoch = -1
        self._cached: list[Tensor] = []

    def _sampler(self, epoch: int) -> MPerClassBatchSampler:
        return MPerClassBatchSampler(self.labels, self.m_per_class, self.batch_size, seed=self.seed * 1_000_003 + epoch)

    def __call__(self, step: int) -> Tensor:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, position = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:
            self._cached = list(self._sampler(epoch))
            self._epoch = epoch
        return self._cached[position]


class ShuffledBatches:
    """Plain random batches (no class balance) addressed by update number: ``batches(step)`` is the batch of ``step``.

    Epoch ``e`` is a permutation of ``range(n)`` drawn from a generator seeded with ``(seed, e)``, cut into
    ``max(1, n // batch_size)`` batches of ``batch_size`` indices (the last incomplete batch is dropped, as with
    ``drop_last=True``); like :class:`ClassBalancedBatches`, the batch of a step does not depend on the steps drawn
    before, so a resumed run draws the same batches.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0) -> None:
        if n < 1 or batch_size < 1:
            raise ValueError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.batches_per_epoch = max(1, n // batch_size)
        self._epoch = -1
        self._order = torch.empty(0, dtype=torch.int64)

    def __call__(self, step: int) -> Tensor:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, position = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = torch.randperm(self.n, generator=generator)
            self._epoch = epoch
        return self._order[position * self.batch_size : (position + 1) * self.batch_size]


def optimizer_step(optimizer: torch.optim.Optimizer, loss: Callable[[], Tensor]) -> float:
    """One plain update: ``zero_grad``, ``loss().backward()``, ``step``; returns the loss value."""
    optimizer.zero_grad(set_to_none=True)
    value = loss()
    value.backward()
    optimizer.step()
    return float(value.detach())


@dataclass(frozen=True)
class FitConfig:
    """The budget and the schedule of the checks of one training run.

    Attributes:
        updates: optimiser updates to make (the budget compared methods share).
        validate_every: updates between two validations (``0``: validate only after the last update).
        patience: stop after this many validations without improvement (``None``: never stop early).
        checkpoint_every: updates between two checkpoint writes (``None``: at each validation, or every tenth
            of the budget when there is no validation).
        threads: ``torch.set_num_threads`` for the run (``None``: unchanged).
        description: the label of the progress bar.
    """

    updates: int
    validate_every: int = 0
    patience: int | None = None
    checkpoint_every: int | None = None
    threads: int | None = None
    description: str = "training"

    def __post_init__(self) -> None:
        if self.updates < 1:
            raise ValueError(f"updates must be >= 1, got {self.updates}")
        if self.validate_every < 0:
            raise ValueError(f"validate_every must be >= 0, got {self.validate_every}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 or None, got {self.checkpoint_every}")

    def is_validation_step(self, done: int) -> bool:
        """Whether the loop validates after ``done`` updates."""
        return done == self.updates or (self.validate_every > 0 and done % self.validate_every == 0)

    def checkpoint_interval(self) -> int:
        if self.checkpoint_every is not None:
            return self.checkpoint_every
        return self.validate_every or max(1, self.updates // 10)


@dataclass
class FitResult:
    """What a training run did.

    Attributes:
        updates: optimiser updates made (fewer than the budget when it stopped early).
        best_update: the update after which the kept state was validated (``updates`` without validation).
        best_score: its validation score (``None`` without validation).
        losses: the loss of every update.
        validation: ``(update, score)`` of every validation.
        stopped_early: whether ``patience`` ended the run.
        resumed_from: the update a checkpoint resumed from (0 for a fresh run).
    """

    updates: int = 0
    best_update: int = 0
    best_score: float | None = None
    losses: list[float] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)
    stopped_early: bool = False
    resumed_from: int = 0


def _states(modules: Mapping[str, nn.Module]) -> dict[str, dict[str, Tensor]]:
    return {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in modules.items()}


def _load_states(modules: Mapping[str, nn.Module], states: Mapping[str, Mapping[str, Tensor]]) -> None:
    for name, module in modules.items():
        module.load_state_dict(states[name])


def _save(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def fit(
    modules: nn.Module | Mapping[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    update: Callable[[int], float],
    config: FitConfig,
    *,
    validate: Callable[[], float] | None = None,
    scheduler: Any | None = None,
    checkpoint: str | Path | None = None,
    reporter: Reporter | None = None,
) -> FitResult:
    """Make ``config.updates`` optimiser updates with ``update(step)``, validating, checkpointing and stopping early.

    Args:
        modules: the trained modules (the model, and a loss with parameters such as proxies), as one module or a
            mapping ``name -> module``; all are put in training mode for the updates, in evaluation mode (and under
            ``torch.no_grad``) for ``validate``, saved in checkpoints and restored to the best validated state.
        optimizer: the optimiser that ``update`` steps (saved in checkpoints).
        update: ``step -> loss value``; makes one optimiser update (see :func:`optimizer_step`,
            :func:`pairloss.training.large_batch.large_batch_step`).
        config: the budget, the validation and checkpoint schedule, the threads.
        validate: ``() -> score``, higher is better (``None``: no validation, the final state is kept).
        scheduler: a learning-rate scheduler stepped after every update (saved in checkpoints).
        checkpoint: a file for checkpoints; an existing one is resumed, and it is deleted when the run completes.
        reporter: a progress display with ``track`` and ``log`` (default: silent).

    Returns:
        A :class:`FitResult`; the modules hold the kept (best validated, or final) state.
    """
    named = {"model": modules} if isinstance(modules, nn.Module) else dict(modules)
    if not named:
        raise ValueError("modules is empty: give at least the model")
    reporter = reporter or Reporter()
    path = Path(checkpoint) if checkpoint is not None else None
    result = FitResult()
    best_state: dict[str, dict[str, Tensor]] | None = None
    since_best = 0
    start = 0
    if path is not None and path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        _load_states(named, saved["modules"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved.get("scheduler") is not None:
            scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        result = FitResult(**saved["result"])
        result.validation = [(int(u), float(v)) for u, v in result.validation]
        best_state, since_best = saved["best_state"], saved["since_best"]
        start = result.updates
        result.resumed_from = start
        reporter.log(f"{config.description}: resumed from update {start}")

    def write_checkpoint() -> None:
        if path is None:
            return
        _save(
            path,
            {
                "modules": _states(named),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": torch.get_rng_state(),
                "result": asdict(result),
                "best_state": best_state,
                "since_best": since_best,
            },
        )

    with torch_threads(config.threads):
        for module in named.values():
            module.train()
        steps = range(start, config.updates)
        for step in reporter.track(steps, config.description, total=len(steps)):
            result.losses.append(float(update(step)))
            if scheduler is not None:
                scheduler.step()
            result.updates = done = step + 1
            if validate is not None and config.is_validation_step(done):
                score = _validated(named, validate)
                result.validation.append((done, score))
                if result.best_score is None or score > result.best_score:
                    result.best_score, result.best_update, since_best = score, done, 0
                    best_state = _states(named)
                else:
                    since_best += 1
                if config.patience is not None and since_best >= config.patience:
                    result.stopped_early = True
                    break
            if done % config.checkpoint_interval() == 0 and done < config.updates:
                write_checkpoint()
    if best_state is not None:
        _load_states(named, best_state)
    else:
        result.best_update = result.updates
    for module in named.values():
        module.train()
    if path is not None:
        path.unlink(missing_ok=True)
    return result


def _validated(modules: Mapping[str, nn.Module], validate: Callable[[], float]) -> float:
    modes = {name: m.training for name, m in modules.items()}
    for module in modules.values():
        module.eval()
    try:
        with torch.no_grad():
            score = float(validate())
    finally:
        for name, module in modules.items():
            module.train(modes[name])
    if score != score:  # NaN: a diverged run must not be kept as the best
        score = float("-inf")
    return score
