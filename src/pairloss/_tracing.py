"""What lets ``torch.compile`` trace the library's settings without importing the compiler on ``import pairloss``,
and where a computation may read values back to the host."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

Result = TypeVar("Result")


def constant_when_traced(fn: Callable[[], Result]) -> Callable[[], Result]:
    """Mark a function without tensor inputs (a read of a setting held in a ``ContextVar``, which the tracer cannot
    follow) as constant for :func:`torch.compile`: the tracer calls it once and bakes its result into the graph.

    This sets the marker that :func:`torch.compiler.assume_constant_result` sets; calling that function here would
    import ``torch._dynamo`` (seconds, and half of the optional libraries) on every ``import pairloss``.
    ``tests/test_compile.py`` checks that the marker is honoured.
    """
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn


def host_reads_allowed(device: torch.device) -> bool:
    """Whether a computation on ``device`` may read a value back to the host to pick a cheaper path (a count of
    non-zero entries, a gathered size): on the CPU outside :func:`torch.compile`, where such a read is only a load
    of a value already computed; never on an accelerator (it would stall the stream) nor while tracing (a graph
    cannot depend on a value)."""
    return device.type == "cpu" and not torch.compiler.is_compiling()
