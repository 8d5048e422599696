"""Input checks shared by every loss and metric: a clear ``ValueError`` instead of a silent wrong answer.

Shape, dtype and length checks read only metadata and are always on. The **value** checks (no NaN or infinite
embedding, multi-hot labels of 0 and 1) must look at the data, which makes the host wait for the device: one
synchronisation per call (the values of all checked tensors are reduced on the device and read back once). They
are on by default; :func:`set_checks` turns them off for the rest of the program (e.g. in a training loop that
already knows its inputs are finite), :func:`checks` for a block of code. Under :func:`torch.compile` they are
skipped, since a compiled graph cannot branch on a value.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

_program_checks = True
_scoped_checks: ContextVar[bool | None] = ContextVar("pairloss_checks", default=None)


def set_checks(enabled: bool) -> None:
    """Turn the value checks of every loss and metric on (the default) or off for the rest of the program.

    With the checks off, a NaN or infinite embedding is no longer reported (it propagates into the loss) and the
    loss never waits for the device: no host synchronisation in its forward and backward pass.
    """
    global _program_checks
    if not isinstance(enabled, bool):
        raise ValueError(f"enabled must be a bool, got {enabled!r}")
    _program_checks = enabled


def checks_enabled() -> bool:
    """Whether the value checks run here and now (never while :func:`torch.compile` traces)."""
    if torch.compiler.is_compiling():
        return False
    scoped = _scoped_checks.get()
    return _program_checks if scoped is None else scoped


@contextmanager
def checks(enabled: bool) -> Iterator[None]:
    """Turn the value checks on or off inside a ``with`` block (and in the code it calls), then restore them."""
    if not isinstance(enabled, bool):
        raise ValueError(f"enabled must be a bool, got {enabled!r}")
    token = _scoped_checks.set(enabled)
    try:
        yield
    finally:
        _scoped_checks.reset(token)


def check_all_finite(named: dict[str, Tensor]) -> None:
    """``ValueError`` naming the first tensor of ``named`` with a NaN or infinite value; one host synchronisation
    for all of them (none when the checks are off)."""
    present = {name: x for name, x in named.items() if x.numel() > 0}
    if not present or not checks_enabled():
        return
    finite = [torch.isfinite(x).all() for x in present.values()]
    if bool(torch.stack(finite).all() if len(finite) > 1 else finite[0]):
        return
    for name, x in present.items():
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")


def check_tensor(x: object, name: str) -> Tensor:
    """Return ``x`` if it is a tensor, else raise ``TypeError``-like ``ValueError`` naming the argument."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_floating(x: Tensor, name: str, *, ndim: int | None = None, finite: bool = True) -> Tensor:
    """Check that ``x`` is a floating-point tensor with ``ndim`` dimensions and (optionally) only finite values."""
    check_tensor(x, name)
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if finite:
        check_all_finite({name: x})
    return x


def check_embeddings(embeddings: Tensor, name: str = "embeddings", *, finite: bool = True) -> Tensor:
    """Check a ``[N, D]`` finite floating-point embedding matrix with ``N >= 1`` and ``D >= 1``."""
    check_floating(embeddings, name, ndim=2, finite=finite)
    if embeddings.shape[0] == 0:
        raise ValueError(f"{name} is empty: a batch needs at least one sample")
    if embeddings.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature, got shape {tuple(embeddings.shape)}")
    return embeddings


def check_labels(labels: Tensor, n: int, name: str = "labels", *, device: torch.device | None = None) -> Tensor:
    """Check class labels for ``n`` samples: a 1-D integer tensor ``[n]`` or a 2-D multi-hot tensor ``[n, C]``.

    Multi-hot labels (bool, integer or float 0/1) mean "similar when at least one label is shared".
    Returns the labels on ``device`` when given.
    """
    check_tensor(labels, name)
    if labels.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D class ids or 2-D multi-hot, got shape {tuple(labels.shape)}")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} entries but there are {n} embeddings")
    if labels.ndim == 1 and (labels.is_floating_point() or labels.is_complex()):
        raise ValueError(f"{name} must be integer class ids, got dtype {labels.dtype}")
    if labels.ndim == 2 and labels.is_floating_point() and labels.numel() > 0 and checks_enabled():
        if not bool(((labels == 0) | (labels == 1)).all()):
            raise ValueError(f"multi-hot {name} must contain only 0 and 1")
    if device is not None and labels.device != device:
        labels = labels.to(device)
    return labels


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    """Check a scalar hyper-parameter is positive (or non-negative with ``allow_zero``)."""
    if not (value > 0 or (allow_zero and value == 0)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_choice(value: str, name: str, choices: tuple[str, ...]) -> str:
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_pair_inputs(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Validate ``(embeddings [N, D], labels [N])`` and an optional reference set ``(ref_emb [M, D], ref_labels)``.

    Raises ``ValueError`` on wrong shapes, non-float embeddings, NaN/inf values, mismatched lengths or feature
    sizes, and a reference set given without its labels. Returns the labels moved to the embeddings' device.
    """
    check_embeddings(embeddings, finite=False)
    labels = check_labels(labels, embeddings.shape[0], device=embeddings.device)
    if (ref_emb is None) != (ref_labels is None):
        raise ValueError("ref_emb and ref_labels must be given together")
    if ref_emb is not None and ref_labels is not None:
        check_embeddings(ref_emb, "ref_emb", finite=False)
        if ref_emb.shape[1] != embeddings.shape[1]:
            raise ValueError(f"ref_emb has {ref_emb.shape[1]} features but embeddings have {embeddings.shape[1]}")
        if ref_emb.dtype != embeddings.dtype:
            raise ValueError(f"ref_emb dtype {ref_emb.dtype} differs from embeddings dtype {embeddings.dtype}")
        ref_labels = check_labels(ref_labels, ref_emb.shape[0], "ref_labels", device=embeddings.device)
        if ref_labels.ndim != labels.ndim:
            raise ValueError("labels and ref_labels must both be class ids or both be multi-hot")
    check_all_finite({"embeddings": embeddings} | ({} if ref_emb is None else {"ref_emb": ref_emb}))
    return embeddings, labels, ref_emb, ref_labels


def check_int(value: object, name: str, *, minimum: int | None = None) -> int:
    """Check that ``value`` is an integer (not a bool or a float) and at least ``minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_class_shape(num_classes: int, embedding_size: int) -> None:
    """Check the two sizes of a learnable class matrix (proxies, classifier weights): positive ints."""
    check_int(num_classes, "num_classes", minimum=1)
    check_int(embedding_size, "embedding_size", minimum=1)


def undefined(metric: str, reason: str) -> float:
    """NaN for a metric that no input defines, with a ``RuntimeWarning`` saying why (never a silent NaN)."""
    warnings.warn(f"{metric} is undefined ({reason}); returning NaN", RuntimeWarning, stacklevel=3)
    return math.nan
