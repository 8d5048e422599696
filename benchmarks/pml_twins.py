"""Every other loss that pytorch-metric-learning also has: pairloss vs PML on the same input.

Input of every case: ``N`` float32 embeddings of dimension ``D = 128`` drawn from a standard normal, labels drawn
uniformly from 100 classes, the same seed for both libraries. Each loss runs with the (shared) default arguments;
the mined triplet variants pair pairloss's ``mining=`` with PML's miner of the same triplets. The proxy losses'
parameters are drawn from the same seed in both libraries, so values and gradients are compared too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmarks._embeddings import embedding_cases, random_batch
from benchmarks.measure import Case

NAME = "pml_twins"
TITLE = "Losses with a PML twin, forward + backward, D = 128, 100 classes, float32"

IMPLEMENTATIONS = ("pairloss", "pytorch-metric-learning")
SIZES = (1024, 4096)
QUICK_SIZES = (256, 512)


@dataclass(frozen=True)
class Twin:
    """A loss in both libraries: the class name (the same in both), its arguments, pairloss's extra arguments and
    the PML miner (class name and arguments) that selects the same tuples."""

    cls: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    ours_only: dict[str, Any] = field(default_factory=dict)
    miner: tuple[str, dict[str, Any]] | None = None
    proxies: bool = False


TWINS = {
    "arcface": Twin("ArcFaceLoss", proxies=True),
    "circle": Twin("CircleLoss"),
    "cosface": Twin("CosFaceLoss", proxies=True),
    "generalized_lifted_structure": Twin("GeneralizedLiftedStructureLoss"),
    "lifted_structure": Twin("LiftedStructureLoss"),
    "margin": Twin("MarginLoss"),
    "normalized_softmax": Twin("NormalizedSoftmaxLoss", proxies=True),
    "npairs": Twin("NPairsLoss"),
    "ntxent": Twin("NTXentLoss"),
    "proxy_anchor": Twin("ProxyAnchorLoss", proxies=True),
    "proxy_nca": Twin("ProxyNCALoss", proxies=True),
    "supcon": Twin("SupConLoss"),
    "triplet_batch_hard": Twin("TripletMarginLoss", ours_only={"mining": "batch_hard"}, miner=("BatchHardMiner", {})),
    "triplet_semihard": Twin(
        "TripletMarginLoss",
        ours_only={"mining": "semihard"},
        miner=("TripletMarginMiner", {"margin": 0.05, "type_of_triplets": "semihard"}),
    ),
    "triplet_smooth": Twin("TripletMarginLoss", {"smooth_loss": True}),
}


def cases(quick: bool) -> list[Case]:
    """Every (N, loss, implementation): smallest sizes first, the two implementations of one size together."""
    return embedding_cases(__name__, TWINS, IMPLEMENTATIONS, QUICK_SIZES if quick else SIZES, conditions=("idle",))


def _build(implementation: str, twin: Twin, params: dict[str, Any]) -> Callable[[torch.Tensor, torch.Tensor], Any]:
    if implementation == "pairloss":
        import pairloss

        module = getattr(pairloss, twin.cls)
        kwargs = {**twin.kwargs, **twin.ours_only}
    else:
        try:
            from pytorch_metric_learning import losses, miners
        except ImportError as error:
            raise ImportError(f"{implementation} is not installed (the bench extra)") from error
        module = getattr(losses, twin.cls)
        kwargs = dict(twin.kwargs)
    size = (params["classes"], params["d"]) if twin.proxies else ()
    loss_fn = module(*size, **kwargs)
    generator = torch.Generator().manual_seed(params["seed"] + 1)
    with torch.no_grad():
        for parameter in loss_fn.parameters():  # the same proxies in both libraries
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    if implementation == "pairloss" or twin.miner is None:
        return loss_fn
    miner_name, miner_kwargs = twin.miner
    miner = getattr(miners, miner_name)(**miner_kwargs)
    return lambda embeddings, labels: loss_fn(embeddings, labels, miner(embeddings, labels))


def setup(case: Case) -> tuple[Callable[[], torch.Tensor], torch.Tensor]:
    """Build the inputs and the loss of ``case``; return ``(step, embeddings)``."""
    params: dict[str, Any] = case.params
    embeddings, labels = random_batch(params)
    loss_fn = _build(case.implementation, TWINS[case.loss], params)
    return (lambda: loss_fn(embeddings, labels)), embeddings
