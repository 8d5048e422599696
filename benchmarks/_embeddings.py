"""What the embedding-loss benchmarks share: their cases and their input batch."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from benchmarks.measure import CONDITIONS, Case

DIMENSION = 128
CLASSES = 100


def embedding_cases(
    module: str,
    losses: Iterable[str],
    implementations: Iterable[str],
    sizes: Iterable[int],
    conditions: Iterable[str] = CONDITIONS,
) -> list[Case]:
    """Every (N, loss, condition, implementation): smallest sizes first, the implementations of one size and
    condition together (so that both see the same machine)."""
    return [
        Case(module, loss, implementation, {"n": n, "d": DIMENSION, "classes": CLASSES, "seed": 0}, condition)
        for n in sizes
        for loss in losses
        for condition in conditions
        for implementation in implementations
    ]


def random_batch(params: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` float32 embeddings of dimension ``d`` from a standard normal (a leaf that requires grad) and labels
    uniform over ``classes``, from ``seed``."""
    generator = torch.Generator().manual_seed(params["seed"])
    embeddings = torch.randn(params["n"], params["d"], generator=generator).requires_grad_()
    labels = torch.randint(0, params["classes"], (params["n"],), generator=generator)
    return embeddings, labels
