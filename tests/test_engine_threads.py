"""The CPU default path of the engine shares its blocks between threads: the results must not depend on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import pairloss
from pairloss import _block_threads
from pairloss.losses.metric import contrastive_loss, multi_similarity_loss


def _loss_and_gradient(loss_fn, threads: int) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    generator = torch.Generator().manual_seed(3)
    embeddings = torch.randn(600, 16, generator=generator).requires_grad_()
    labels = torch.randint(0, 7, (600,), generator=generator)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        loss = loss_fn(embeddings, labels, block_size=32)
        loss.backward()
    finally:
        torch.set_num_threads(before)
    assert embeddings.grad is not None
    return loss.detach(), embeddings.grad


@pytest.mark.parametrize("loss_fn", [contrastive_loss, multi_similarity_loss])
def test_results_do_not_depend_on_the_number_of_threads(loss_fn) -> None:  # type: ignore[no-untyped-def]
    loss_1, grad_1 = _loss_and_gradient(loss_fn, 1)
    for threads in (2, 3):
        loss_n, grad_n = _loss_and_gradient(loss_fn, threads)
        assert torch.equal(loss_1, loss_n)
        assert torch.equal(grad_1, grad_n)


def test_workers_run_in_the_callers_context_and_restore_the_thread_count() -> None:
    """The value checks are a context variable: the worker threads must see the caller's setting."""
    seen: list[bool] = []

    def run(indices: Iterator[int]) -> None:
        for _ in indices:
            seen.append(pairloss.checks_enabled())

    before = torch.get_num_threads()
    with pairloss.checks(False):
        _block_threads.run_blocks(6, 2, run)
    assert seen == [False] * 6
    assert torch.get_num_threads() == before


def test_worker_count() -> None:
    cpu = torch.device("cpu")
    assert _block_threads.block_workers(cpu, 1) == 1
    assert _block_threads.block_workers(torch.device("meta"), 8) == 1
    assert _block_threads.block_workers(cpu, 100) == torch.get_num_threads()
