"""Training on a batch as large as the training set: the multi-stage step of Patel, Tolias, Matas (CVPR 2022).

A pairwise loss couples every sample of the batch, so its gradient cannot be accumulated over small
batches. The multi-stage step gets the exact gradient of the loss on a batch of any
size with memory bounded by the chunk size:

1. embed every sample of the big batch chunk by chunk **without autograd** (no graph is kept);
2. compute the loss on the ``[N, D]`` embedding matrix and its gradient ``G = ∂L/∂E`` (any loss of the
   library; ours run on the row-block engine, so this stage needs ``O(block · N)`` memory, not ``O(N²)``);
3. re-embed chunk by chunk **with** autograd and back-propagate ``G`` restricted to the chunk,
   ``Σ_chunks ⟨G_c, E_c(θ)⟩``, whose parameter gradient is exactly ``∂L/∂θ``;

then one optimiser step. Peak memory is the activations of one chunk plus the ``[N, D]`` embeddings.

Stages 1 and 3 must produce the same embeddings, so the model has to be deterministic across the two passes:

* **dropout and other random layers**: each chunk's RNG state (CPU, and CUDA when the inputs are on a GPU) is
  recorded before stage 1 and restored before stage 3, as GradCache does, so both passes draw the same masks;
* **batch-norm**, ``batch_norm="frozen"`` (default, as in the authors' code): batch-norm layers run in
  evaluation mode (running statistics, no update) during the step; ``batch_norm="chunk"``:
  they keep their mode and normalise with each chunk's statistics, and their running
  statistics are restored after stage 1 so that they are updated once per chunk (in
  stage 3), exactly as a plain chunk-by-chunk forward would.

The resulting parameter gradients equal those of a plain ``loss_fn(cat([model(c) for c in chunks]), labels)``
backward (the same chunking, RNG and batch-norm mode) and, for models without batch-norm in training mode or
dropout, those of a plain backward on the whole batch in one pass.

Mixed precision: ``amp_dtype`` (e.g. ``torch.bfloat16``) runs stages 1 and 3 under ``torch.autocast`` on the
inputs' device; stage 2 always runs in the embeddings' float32 (or float64) precision. For float16, pass
``scale_loss=grad_scaler.scale``: the stage-2 loss is scaled before its backward, so the embedding gradient that
stage 3 back-propagates, and every parameter gradient, carry the scale that ``grad_scaler.step`` removes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pairloss._validation import check_choice, check_tensor

__all__ = ["BATCH_NORM_MODES", "LargeBatchResult", "large_batch_backward", "large_batch_step"]

LossFn = Callable[[Tensor, Tensor], Tensor]
ScaleFn = Callable[[Tensor], Tensor]

#: How batch-norm layers are handled: ``frozen`` (evaluation mode during the step) or ``chunk`` (per-chunk
#: stats).
BATCH_NORM_MODES = ("frozen", "chunk")


@dataclass(frozen=True)
class LargeBatchResult:
    """The loss value of the step and the stage-1 embeddings ``[N, D]`` (detached)."""

    loss: float
    embeddings: Tensor


@dataclass(frozen=True)
class _RngState:
    cpu: Tensor
    cuda: Tensor | None
    device: torch.device

    @classmethod
    def capture(cls, device: torch.device) -> _RngState:
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda, device)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


_BATCH_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm)


@contextmanager
def _batch_norm_handling(model: nn.Module, mode: str) -> Iterator[list[nn.Module]]:
    """Put batch-norm layers in evaluation mode for ``frozen``; yield the batch-norm layers in training
    mode."""
    norms = [m for m in model.modules() if isinstance(m, _BATCH_NORM_TYPES)]
    if mode != "frozen":
        yield [m for m in norms if m.training]
        return
    modes = [m.training for m in norms]
    for m in norms:
        m.eval()
    try:
        yield []
    finally:
        for m, was_training in zip(norms, modes, strict=True):
            m.train(was_training)


def _snapshot_buffers(modules: list[nn.Module]) -> list[list[Tensor]]:
    return [[b.detach().clone() for b in m.buffers(recurse=False)] for m in modules]


def _restore_buffers(modules: list[nn.Module], saved: list[list[Tensor]]) -> None:
    with torch.no_grad():
        for m, buffers in zip(modules, saved, strict=True):
            for buffer, value in zip(m.buffers(recurse=False), buffers, strict=True):
                buffer.copy_(value)


def large_batch_backward(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    loss_fn: LossFn,
    *,
    chunk_size: int = 256,
    batch_norm: str = "frozen",
    amp_dtype: torch.dtype | None = None,
    scale_loss: ScaleFn | None = None,
) -> LargeBatchResult:
    """Accumulate into ``.grad`` the gradient of ``loss_fn(model(inputs), labels)`` with the multi-stage
    method.

    Args:
        model: any ``nn.Module`` mapping ``inputs[i:j]`` to embeddings ``[j − i, D]``.
        inputs: the whole batch (split along its first dimension into chunks).
        labels: the batch's labels, passed to ``loss_fn`` as they are.
        loss_fn: any loss ``(embeddings [N, D], labels) -> scalar``; its own parameters (proxies,
            classifier weights) receive their gradient in stage 2.
        chunk_size: samples embedded at once in stages 1 and 3 (the memory knob).
        batch_norm: ``"frozen"`` or ``"chunk"`` (see the module docstring).
        amp_dtype: autocast dtype for the model passes (``None``: full precision).
        scale_loss: applied to the stage-2 loss before its backward (``GradScaler.scale`` for float16).

    Returns:
        The loss value (unscaled) and the stage-1 embeddings. Call ``optimizer.step()`` afterwards (or use
        :func:`large_batch_step`).
    """
    check_tensor(inputs, "inputs")
    check_tensor(labels, "labels")
    if inputs.ndim == 0 or inputs.shape[0] == 0:
        raise ValueError("inputs is empty: a batch needs at least one sample")
    if labels.shape[0] != inputs.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} entries but inputs has {inputs.shape[0]} samples")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    check_choice(batch_norm, "batch_norm", BATCH_NORM_MODES)
    device = inputs.device
    chunks = inputs.split(chunk_size)

    def autocast() -> torch.autocast:
        return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)

    with _batch_norm_handling(model, batch_norm) as updating_norms:
        saved_buffers = _snapshot_buffers(updating_norms)
        states: list[_RngState] = []
        outputs: list[Tensor] = []
        with torch.no_grad(), autocast():
            for chunk in chunks:
                states.append(_RngState.capture(device))
                outputs.append(model(chunk))
        after_stage_one = _RngState.capture(device)
        _restore_buffers(updating_norms, saved_buffers)

        stage_one = torch.cat(outputs)
        precision = torch.float32 if stage_one.dtype in (torch.float16, torch.bfloat16) else stage_one.dtype
        embeddings = stage_one.to(precision).requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(embeddings, labels)
            (scale_loss(loss) if scale_loss is not None else loss).backward()
        if embeddings.grad is None:
            raise ValueError("loss_fn does not depend on the embeddings")
        value = float(loss.detach())
        if value != 0 and not bool(embeddings.grad.any()):
            warnings.warn(
                f"the gradient of loss_fn w.r.t. the embeddings is exactly 0 although the loss is {value:.6g}: "
                "this step leaves the model as it is (a saturated loss, such as RS@k on an untrained network "
                "whose similarities are all alike)",
                RuntimeWarning,
                stacklevel=2,
            )
        grads = embeddings.grad.split(chunk_size)

        for chunk, state, grad in zip(chunks, states, grads, strict=True):
            state.restore()
            with torch.enable_grad(), autocast():
                out = model(chunk)
            out.backward(grad.to(out.dtype))
        after_stage_one.restore()
    return LargeBatchResult(value, embeddings.detach())


def large_batch_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: Tensor,
    labels: Tensor,
    loss_fn: LossFn,
    *,
    chunk_size: int = 256,
    batch_norm: str = "frozen",
    amp_dtype: torch.dtype | None = None,
) -> LargeBatchResult:
    """One optimiser step on the whole batch: ``zero_grad``, :func:`large_batch_backward`, ``step``."""
    optimizer.zero_grad(set_to_none=True)
    result = large_batch_backward(
        model, inputs, labels, loss_fn, chunk_size=chunk_size, batch_norm=batch_norm, amp_dtype=amp_dtype
    )
    optimizer.step()
    return result
