"""Progress bars for long work (training, reproductions, benchmarks), built on rich.

:class:`RichReporter` implements :class:`pairloss.training.reporting.Reporter`, the interface that the library's
training loops and recipes take; ``RichReporter(enabled=False)`` turns the bars off.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pairloss.training.reporting import Reporter

__all__ = ["RichReporter"]

T = TypeVar("T")


class RichReporter(Reporter):
    """A shared rich progress display; ``track`` wraps an iterable in a bar that disappears when done."""

    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None

    @contextmanager
    def session(self) -> Iterator[Reporter]:
        """Keep one live display open for nested ``track`` calls."""
        if not self.enabled or self._progress is not None:
            yield self
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        with self._progress:
            try:
                yield self
            finally:
                self._progress = None

    def track(self, items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
        """Iterate over ``items`` while showing a bar labelled ``description``."""
        if not self.enabled:
            yield from items
            return
        with self.session():
            progress = self._progress
            assert progress is not None
            if total is None and hasattr(items, "__len__"):
                total = len(items)  # type: ignore[arg-type]
            task = progress.add_task(description, total=total)
            try:
                for item in items:
                    yield item
                    progress.advance(task)
            finally:
                progress.remove_task(task)

    def log(self, message: str) -> None:
        """Print a line above the bars (nothing when silent)."""
        if self.enabled:
            self.console.print(message)
