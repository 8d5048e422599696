"""Coarse parallelism for block loops on the CPU: the blocks of one computation shared by a few Python threads,
each running single-threaded kernels.

On a machine where another process takes a core, a kernel split across intra-op threads waits for the slowest of
them at every step; with whole blocks per thread, a thread that loses its core delays only its own block. Callers
write each block's result to its own slot and combine the slots in a fixed order afterwards, so their results do
not depend on the number of threads or on the schedule.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["block_workers", "run_blocks"]


def block_workers(device: torch.device, n_blocks: int) -> int:
    """How many threads share the blocks of a CPU computation: one per intra-op thread (each block's kernels then
    run on one thread), one on other devices, for a single block, and while :func:`torch.compile` traces."""
    if device.type != "cpu" or n_blocks < 2 or torch.compiler.is_compiling():
        return 1
    return min(torch.get_num_threads(), n_blocks)


def run_blocks(n_blocks: int, workers: int, run: Callable[[Iterator[int]], None]) -> None:
    """``run(block indices)`` on ``workers`` threads that take the next block when they finish one, with every
    kernel on one thread meanwhile (``torch.set_num_threads(1)``, restored after); in the calling thread when
    ``workers`` is 1. The workers run without autograd, in the caller's inference mode and in a copy of the
    caller's context (its context variables: value checks, memory budget, cross-rank hook)."""
    if workers == 1:
        run(iter(range(n_blocks)))
        return
    lock = threading.Lock()
    pending = iter(range(n_blocks))

    def claimed() -> Iterator[int]:
        while True:
            with lock:
                index = next(pending, None)
            if index is None:
                return
            yield index

    inference = torch.is_inference_mode_enabled()  # thread-local, like grad mode: the workers take the caller's

    def work() -> None:
        with torch.inference_mode(inference), torch.no_grad():
            run(claimed())

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(contextvars.copy_context().run, work) for _ in range(workers)]
            for future in futures:
                future.result()
    finally:
        torch.set_num_threads(threads)
