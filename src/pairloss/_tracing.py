"""What lets ``torch.compile`` trace the library's settings without importing the compiler on ``import pairloss``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

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
