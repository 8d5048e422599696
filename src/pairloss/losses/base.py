"""Base classes of every loss: the registry behind ``pairloss list`` and the checks every embedding loss runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from pairloss._validation import check_embeddings, check_labels

__all__ = [
    "BatchAxis",
    "EmbeddingLoss",
    "FunctionalEmbeddingLoss",
    "PairLoss",
    "check_pair_inputs",
    "mean_of_active",
    "registered_losses",
]


@dataclass(frozen=True)
class BatchAxis:
    """Where one argument of a loss holds its samples: what a batch split over ranks is concatenated along.

    Read by :class:`pairloss.training.distributed.CrossRankLoss`, which gathers every rank's shard of each tensor
    argument into the global batch.

    Attributes:
        axis: the sample axis. A sequence of tensors (e.g. a list of views) stands for their stack along a new
            first axis, so each element's sample axis is ``axis − 1``. ``None``: the argument is not split over
            ranks (e.g. shared proxies) and is passed as it is.
        pad: the value that fills the other axes up to their largest size over the ranks (the padding convention
            of the argument, e.g. ``-1`` for the relevance of a padded list slot and ``0`` for its score);
            ``None``: the other axes must have the same size on every rank.
    """

    axis: int | None = 0
    pad: float | None = None


class PairLoss(nn.Module):
    """Base of every loss in the library.

    Subclasses set three class attributes, shown by ``pairloss list`` and the docs:

    * ``formula``: the loss in one line;
    * ``paper``: the paper that introduced it;
    * ``family``: ``metric``, ``proxy``, ``recall``, ``ranking``, ``calibrated``, ``topn``, ``multilabel``,
      ``hashing``, ``multiview``, ``polygon``, ``domain``, ``crossentropy``.
    """

    formula: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    family: ClassVar[str] = ""
    #: True when the value is a function of row-block engine sums only, so that
    #: :class:`pairloss.training.distributed.CrossRankLoss` can split the anchors across ranks.
    supports_cross_rank: ClassVar[bool] = False
    #: The sample axis (and padding) of each argument, by name, for a batch split over ranks; an argument not
    #: named here has its samples along axis 0 and the same size on every rank along its other axes.
    batch_axes: ClassVar[Mapping[str, BatchAxis]] = {}
    _registry: ClassVar[dict[str, type[PairLoss]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.formula and cls.family:
            PairLoss._registry[cls.__name__] = cls


def registered_losses() -> dict[str, type[PairLoss]]:
    """Every public loss class, by name (importing :mod:`pairloss.losses` registers them all)."""
    import pairloss.losses  # noqa: F401  (registration happens on import)

    return dict(sorted(PairLoss._registry.items(), key=lambda item: (item[1].family, item[0])))


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
    check_embeddings(embeddings)
    labels = check_labels(labels, embeddings.shape[0], device=embeddings.device)
    if (ref_emb is None) != (ref_labels is None):
        raise ValueError("ref_emb and ref_labels must be given together")
    if ref_emb is not None and ref_labels is not None:
        check_embeddings(ref_emb, "ref_emb")
        if ref_emb.shape[1] != embeddings.shape[1]:
            raise ValueError(f"ref_emb has {ref_emb.shape[1]} features but embeddings have {embeddings.shape[1]}")
        if ref_emb.dtype != embeddings.dtype:
            raise ValueError(f"ref_emb dtype {ref_emb.dtype} differs from embeddings dtype {embeddings.dtype}")
        ref_labels = check_labels(ref_labels, ref_emb.shape[0], "ref_labels", device=embeddings.device)
        if ref_labels.ndim != labels.ndim:
            raise ValueError("labels and ref_labels must both be class ids or both be multi-hot")
    return embeddings, labels, ref_emb, ref_labels


def mean_of_active(total: Tensor, count: Tensor) -> Tensor:
    """``total / count`` where ``count > 0``, else 0: PML's ``AvgNonZeroReducer`` on pre-summed statistics."""
    return total / torch.clamp(count, min=1)


class EmbeddingLoss(PairLoss):
    """A loss on ``(embeddings [N, D], labels [N])``, optionally against a reference set ``(ref_emb, ref_labels)``.

    The call signature is pytorch-metric-learning's: ``loss(embeddings, labels, ref_emb=None, ref_labels=None)``.
    When the reference set is omitted the batch is compared with itself and self-pairs are excluded.
    """


class FunctionalEmbeddingLoss(EmbeddingLoss):
    """An embedding loss whose module is its functional form plus stored hyper-parameters.

    Subclasses set ``loss_function`` (e.g. ``staticmethod(contrastive_loss)``) and ``options``, the names of the
    attributes passed to it as keyword arguments; ``forward`` is then
    ``loss_function(embeddings, labels, ref_emb, ref_labels, **{name: getattr(self, name) for name in options})``.
    """

    #: The functional form that ``forward`` calls, and the attributes passed to it as keyword arguments.
    loss_function: ClassVar[Callable[..., Tensor]]
    options: ClassVar[tuple[str, ...]] = ()

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        hyper_parameters: dict[str, Any] = {name: getattr(self, name) for name in self.options}
        return type(self).loss_function(embeddings, labels, ref_emb, ref_labels, **hyper_parameters)
