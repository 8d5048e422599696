"""The progress-reporting interface of long work (training loops, reproductions).

Code below the application layer takes a :class:`Reporter` and calls ``track``, ``log`` and ``session``; this base
class reports nothing, so the library needs no terminal library. :class:`pairloss.app.progress.RichReporter`
implements the same interface with rich progress bars (the ``pairloss`` command uses it); pass one to a trainer
or to :func:`pairloss.recipes.protocol.run_experiment` to see the bars from Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["Reporter"]

T = TypeVar("T")


class Reporter:
    """Reports nothing: ``track`` yields the items, ``log`` drops the message. Subclass it to show progress."""

    @classmethod
    def silent(cls) -> Reporter:
        """A reporter that shows nothing."""
        return Reporter()

    @contextmanager
    def session(self) -> Iterator[Reporter]:
        """Keep one display open for nested ``track`` calls (nothing to keep open here)."""
        yield self

    def track(self, items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
        """Iterate over ``items`` (a subclass shows a bar labelled ``description`` with ``total`` steps)."""
        del description, total
        yield from items

    def log(self, message: str) -> None:
        """Print a line above the bars (a subclass prints it; this one drops it)."""
        del message
