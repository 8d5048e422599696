"""Stateful metrics: accumulate over batches (and ``torch.distributed`` ranks), then compute on everything seen.

Every metric here wraps one functional metric of :mod:`pairloss.metrics` and gives it the concatenation of all the
batches passed to :meth:`Metric.update` (on every rank when a process group is initialised). So

    metric = pairloss.metrics.NDCG(k=10)
    for scores, relevance in batches:
        metric.update(scores, relevance)
    metric.compute()        # == ndcg_at_k(cat(all scores), cat(all relevance), k=10)

The API follows torchmetrics where it fits (``update`` / ``compute`` / ``reset``, ``forward`` = update and return
the value on this batch alone, ``sync_on_compute``, ``process_group``; a metric is an ``nn.Module``), without
depending on it. Like torchmetrics' ``cat`` states, the inputs are kept (detached, on their device) until
``compute``: most of these metrics (MAP@R, GAUC, NDCG over padded lists, Hamming mAP) are not sums of per-batch
values. Padded ranking lists of different lengths are padded to the longest with the padding convention (relevance
``-1``, score 0); other inputs must keep their trailing shape from batch to batch and rank to rank.

Across ranks, ``compute`` first exchanges the shapes of every rank's data (``all_gather_object``), then gathers the
padded tensors with one ``all_gather`` per input, in rank order, and every rank computes the same value; a rank
without data contributes nothing, and inputs that cannot be joined raise the same ``ValueError`` on every rank.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from pairloss._collectives import Shape, exchange, gather_padded
from pairloss.losses._lists import PAD
from pairloss.metrics.calibration import ece, log_loss, pcoc
from pairloss.metrics.hashing import hamming_map, hamming_ranking
from pairloss.metrics.multilabel import (
    coverage,
    label_ranking_average_precision,
    multilabel_report,
    one_error,
    ranking_loss,
)
from pairloss.metrics.ranking import auc, gauc, mean_average_precision, mrr, ndcg_at_k
from pairloss.metrics.retrieval import retrieval

__all__ = [
    "AUC",
    "ECE",
    "GAUC",
    "MAP",
    "MRR",
    "NDCG",
    "PCOC",
    "Coverage",
    "Field",
    "FunctionalMetric",
    "HammingMAP",
    "LabelRankingAveragePrecision",
    "LogLoss",
    "MAPAtR",
    "Metric",
    "MultiLabelReport",
    "OneError",
    "RPrecision",
    "RankingLoss",
    "RecallAtK",
    "RetrievalMetrics",
]


@dataclass(frozen=True)
class Field:
    """One input a metric accumulates.

    Attributes:
        name: the argument's name (of ``update`` and of the functional metric).
        pad: the value that fills the trailing axes of shorter batches (``-1`` for padded list relevance);
            ``None``: every batch must have the same trailing shape.
        optional: the input may be left out (``None``), in every batch alike.
    """

    name: str
    pad: float | None = None
    optional: bool = False


def _collective_device(group: Any, like: torch.device) -> torch.device:
    """Where the backend wants tensors: the current CUDA device for NCCL, else the data's own device."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return like


def _as_tensor(value: Any, name: str) -> Tensor:
    tensor = value.detach() if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    if tensor.ndim == 0:
        raise ValueError(f"{name} must have a sample axis, got a scalar")
    return tensor


def _trailing_problem(name: str, shapes: Sequence[Shape], dtypes: Sequence[str], pad: float | None) -> str | None:
    if len({len(shape) for shape in shapes}) > 1 or len(set(dtypes)) > 1:
        return f"{name} must keep its number of dimensions and dtype, got {list(zip(shapes, dtypes, strict=True))}"
    if pad is None and len({shape[1:] for shape in shapes}) > 1:
        return f"{name} must keep its shape beyond the first axis, got {list(shapes)}"
    return None


def _join(batches: Sequence[Tensor], field: Field) -> Tensor:
    """Concatenate a field's batches along axis 0, padding the trailing axes with ``field.pad`` where allowed."""
    problem = _trailing_problem(
        field.name, [tuple(b.shape) for b in batches], [str(b.dtype) for b in batches], field.pad
    )
    if problem is not None:
        raise ValueError(problem)
    if len(batches) == 1:
        return batches[0]
    target = [max(b.shape[d] for b in batches) for d in range(1, batches[0].ndim)]
    fill = 0.0 if field.pad is None else field.pad
    padded = []
    for batch in batches:
        if list(batch.shape[1:]) != target:
            full = batch.new_full((batch.shape[0], *target), fill)
            full[tuple(slice(0, n) for n in batch.shape)] = batch
            batch = full
        padded.append(batch)
    return torch.cat(padded)


class Metric(nn.Module, ABC):
    """Base of the stateful metrics: keeps the batches of each :class:`Field`, computes on their concatenation.

    Subclasses set ``fields`` and implement :meth:`evaluate` (the functional metric on complete inputs).

    Args:
        sync_on_compute: under an initialised ``torch.distributed`` process group, ``compute`` joins the data of
            every rank (every rank then gets the same value); ``False`` computes on this rank's data alone.
        process_group: the group to join (default: the world).
    """

    fields: ClassVar[tuple[Field, ...]]
    #: A second set of inputs with its own ``update_*`` method (a gallery, a database); empty for most metrics.
    reference_fields: ClassVar[tuple[Field, ...]] = ()

    def __init__(self, *, sync_on_compute: bool = True, process_group: Any = None) -> None:
        super().__init__()
        self.sync_on_compute = sync_on_compute
        self.process_group = process_group
        self._batches: dict[str, list[Tensor]] = {}
        self._given: dict[str, bool] = {}
        self.reset()

    def reset(self) -> None:
        """Forget every batch."""
        self._batches = {field.name: [] for field in (*self.fields, *self.reference_fields)}
        self._given = {}

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Add one batch (the arguments of the functional metric's data, by position or name)."""
        self._append(self.fields, self._bind(self.fields, args, kwargs))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Add one batch and return the metric on that batch alone (torchmetrics' ``forward``)."""
        inputs = self._bind(self.fields, args, kwargs)
        self._append(self.fields, inputs)
        return self.evaluate(**inputs)

    def compute(self) -> Any:
        """The metric on every batch since the last :meth:`reset` (of every rank, with ``sync_on_compute``)."""
        inputs = {field.name: self._joined(field) for field in (*self.fields, *self.reference_fields)}
        required = [f.name for f in self.fields if not f.optional]
        if all(inputs[name] is None for name in required):
            raise ValueError(f"{type(self).__name__} has no data: call update() before compute()")
        return self.evaluate(**inputs)

    @abstractmethod
    def evaluate(self, **inputs: Tensor | None) -> Any:
        """The functional metric on complete inputs (one tensor, or ``None``, per field)."""

    # ------------------------------------------------------------------------------------------------------------

    def _add_reference(self, *values: Any) -> None:
        self._append(self.reference_fields, self._bind(self.reference_fields, values, {}))

    def _local(self, fields: Sequence[Field]) -> dict[str, Tensor | None]:
        """This rank's batches so far, joined (no synchronisation)."""
        return {f.name: _join(self._batches[f.name], f) if self._batches[f.name] else None for f in fields}

    def _bind(self, fields: Sequence[Field], args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Tensor | None]:
        names = [field.name for field in fields]
        if len(args) > len(names) or set(kwargs) - set(names) or set(names[: len(args)]) & set(kwargs):
            given = [*(f"#{i}" for i in range(len(args))), *kwargs]
            raise TypeError(f"{type(self).__name__}.update takes ({', '.join(names)}), got {', '.join(given)}")
        values = dict(zip(names, args, strict=False)) | kwargs
        bound: dict[str, Tensor | None] = {}
        for field in fields:
            value = values.get(field.name)
            if value is None and not field.optional:
                raise TypeError(f"{type(self).__name__}.update is missing {field.name!r}")
            bound[field.name] = None if value is None else _as_tensor(value, field.name)
        rows = {name: t.shape[0] for name, t in bound.items() if t is not None}
        if len(set(rows.values())) > 1:
            raise ValueError(f"the inputs of one batch must have the same number of rows, got {rows}")
        return bound

    def _append(self, fields: Sequence[Field], inputs: dict[str, Tensor | None]) -> None:
        for field in fields:
            value = inputs[field.name]
            given = value is not None
            if self._given.setdefault(field.name, given) != given:
                raise ValueError(f"{field.name} must be given in every batch or in none")
            if value is not None:
                self._batches[field.name].append(value)

    def _joined(self, field: Field) -> Tensor | None:
        batches = self._batches[field.name]
        local = _join(batches, field) if batches else None
        group = self.process_group
        if not (self.sync_on_compute and dist.is_available() and dist.is_initialized()):
            return local
        if dist.get_world_size(group) == 1:
            return local
        described = None if local is None else (tuple(local.shape), str(local.dtype))
        everyone = exchange(described, group)
        present = [d for d in everyone if d is not None]
        if not present:
            return None
        shapes, dtypes = [d[0] for d in present], [d[1] for d in present]
        problem = _trailing_problem(field.name, shapes, dtypes, field.pad)
        if problem is not None:
            raise ValueError(f"{problem} across ranks")
        device = _collective_device(group, local.device if local is not None else torch.device("cpu"))
        if local is None:
            local = torch.empty((0, *shapes[0][1:]), dtype=getattr(torch, dtypes[0].removeprefix("torch.")))
        all_shapes = [d[0] if d is not None else (0, *shapes[0][1:]) for d in everyone]
        return gather_padded(local.to(device), all_shapes, group, 0.0 if field.pad is None else field.pad)


class FunctionalMetric(Metric):
    """A metric that calls ``function(*fields, **options)`` on the accumulated inputs.

    ``options`` are the functional metric's keyword arguments (checked by name when the metric is built; their
    values are checked by the function).
    """

    function: ClassVar[Callable[..., Any]]

    def __init__(self, *, sync_on_compute: bool = True, process_group: Any = None, **options: Any) -> None:
        super().__init__(sync_on_compute=sync_on_compute, process_group=process_group)
        data = {field.name for field in self.fields}
        allowed = [name for name in inspect.signature(type(self).function).parameters if name not in data]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no option {unknown}; its options: {allowed}")
        self.options = options

    def evaluate(self, **inputs: Tensor | None) -> Any:
        arrays = [_host(inputs[field.name]) for field in self.fields]
        return type(self).function(*arrays, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.options.items())


def _host(tensor: Tensor | None) -> Tensor | None:
    """The functional metrics read numpy arrays: hand them CPU tensors."""
    return None if tensor is None else tensor.cpu()


# ---------------------------------------------------------------- retrieval


class RetrievalMetrics(Metric):
    """Recall@k, precision@k, R-precision and MAP@R of everything seen: :func:`~pairloss.metrics.retrieval.retrieval`.

    ``update(embeddings, labels)`` adds queries; without a separate gallery they are retrieved among themselves
    (each query's own entry excluded). ``update_reference(embeddings, labels)`` adds gallery items instead.
    ``compute()`` returns the dict of :func:`~pairloss.metrics.retrieval.retrieval`. Options: ``k``, ``metric``,
    ``avg_of_avgs``, ``memory_budget``.
    """

    fields = (Field("embeddings"), Field("labels"))
    reference_fields = (Field("reference", optional=True), Field("reference_labels", optional=True))

    def __init__(
        self,
        k: int | Sequence[int] = (1, 2, 4, 8),
        *,
        metric: str = "cosine",
        avg_of_avgs: bool = False,
        memory_budget: int = 256 * 2**20,
        sync_on_compute: bool = True,
        process_group: Any = None,
    ) -> None:
        super().__init__(sync_on_compute=sync_on_compute, process_group=process_group)
        self.options: dict[str, Any] = {
            "k": k,
            "metric": metric,
            "avg_of_avgs": avg_of_avgs,
            "memory_budget": memory_budget,
        }

    def update_reference(self, embeddings: Tensor, labels: Tensor) -> None:
        """Add gallery items (searched by the queries of :meth:`update`)."""
        self._add_reference(embeddings, labels)

    def evaluate(self, **inputs: Tensor | None) -> Any:
        """The metrics of the given queries against the given gallery (by default this rank's gallery so far)."""
        if "reference" not in inputs:  # forward: this batch of queries
            inputs |= self._local(self.reference_fields)
        embeddings, labels = inputs["embeddings"], inputs["labels"]
        assert embeddings is not None and labels is not None
        return retrieval(embeddings, labels, inputs["reference"], inputs["reference_labels"], **self.options)


class _OneRetrievalMetric(RetrievalMetrics):
    #: The entry of :func:`~pairloss.metrics.retrieval.retrieval`'s dict that this metric returns.
    key: str

    def evaluate(self, **inputs: Tensor | None) -> Any:
        return super().evaluate(**inputs)[self.key]


class RecallAtK(_OneRetrievalMetric):
    """Recall@k (PML's ``precision_at_1`` for k = 1) of everything seen; see :class:`RetrievalMetrics`."""

    def __init__(self, k: int = 1, **kwargs: Any) -> None:
        super().__init__(k=k, **kwargs)
        self.key = f"recall@{k}"


class MAPAtR(_OneRetrievalMetric):
    """MAP@R (Musgrave, Belongie, Lim, ECCV 2020) of everything seen; see :class:`RetrievalMetrics`."""

    key = "map@r"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(k=1, **kwargs)


class RPrecision(_OneRetrievalMetric):
    """R-precision of everything seen; see :class:`RetrievalMetrics`."""

    key = "r_precision"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(k=1, **kwargs)


# ---------------------------------------------------------------- ranking

#: Padded lists ``[B, L]`` (score 0, relevance ``-1`` in shorter batches), or flat items with their group ids.
_LISTS = (Field("scores", pad=0.0), Field("relevance", pad=PAD), Field("group_ids", optional=True))


class NDCG(FunctionalMetric):
    """Mean NDCG@k over every list seen: :func:`~pairloss.metrics.ranking.ndcg_at_k` (options ``k``, ``empty``).

    ``update(scores, relevance, group_ids=None)`` with padded lists ``[B, L]`` (any ``L`` per batch) or flat items
    and their group ids (a group may span batches: its items are joined).
    """

    fields = _LISTS
    function = staticmethod(ndcg_at_k)


class MRR(FunctionalMetric):
    """Mean reciprocal rank over every list seen: :func:`~pairloss.metrics.ranking.mrr` (option ``empty``)."""

    fields = _LISTS
    function = staticmethod(mrr)


class MAP(FunctionalMetric):
    """Mean average precision over every list seen: :func:`~pairloss.metrics.ranking.mean_average_precision`."""

    fields = _LISTS
    function = staticmethod(mean_average_precision)


class AUC(FunctionalMetric):
    """ROC AUC of every item seen: :func:`~pairloss.metrics.ranking.auc`; ``update(scores, labels)``."""

    fields = (Field("scores"), Field("labels"))
    function = staticmethod(auc)


class GAUC(FunctionalMetric):
    """Group AUC of every item seen: :func:`~pairloss.metrics.ranking.gauc`; ``update(scores, labels, group_ids)``."""

    fields = (Field("scores"), Field("labels"), Field("group_ids"))
    function = staticmethod(gauc)


# ---------------------------------------------------------------- calibration

_PROBABILITIES = (Field("probs"), Field("labels"))


class LogLoss(FunctionalMetric):
    """Binary cross-entropy of every prediction seen: :func:`~pairloss.metrics.calibration.log_loss` (``eps``)."""

    fields = _PROBABILITIES
    function = staticmethod(log_loss)


class ECE(FunctionalMetric):
    """Expected calibration error of every prediction seen: :func:`~pairloss.metrics.calibration.ece` (``n_bins``)."""

    fields = _PROBABILITIES
    function = staticmethod(ece)


class PCOC(FunctionalMetric):
    """Predicted click over click of every prediction seen: :func:`~pairloss.metrics.calibration.pcoc`."""

    fields = _PROBABILITIES
    function = staticmethod(pcoc)


# ---------------------------------------------------------------- multi-label

_LABEL_SCORES = (Field("scores"), Field("labels"))


class MultiLabelReport(FunctionalMetric):
    """Every multi-label measure of every row seen: :func:`~pairloss.metrics.multilabel.multilabel_report`."""

    fields = _LABEL_SCORES
    function = staticmethod(multilabel_report)


class RankingLoss(FunctionalMetric):
    """Multi-label ranking loss: :func:`~pairloss.metrics.multilabel.ranking_loss` (option ``convention``)."""

    fields = _LABEL_SCORES
    function = staticmethod(ranking_loss)


class Coverage(FunctionalMetric):
    """Multi-label coverage: :func:`~pairloss.metrics.multilabel.coverage`."""

    fields = _LABEL_SCORES
    function = staticmethod(coverage)


class OneError(FunctionalMetric):
    """Multi-label one-error: :func:`~pairloss.metrics.multilabel.one_error`."""

    fields = _LABEL_SCORES
    function = staticmethod(one_error)


class LabelRankingAveragePrecision(FunctionalMetric):
    """Label-ranking average precision: :func:`~pairloss.metrics.multilabel.label_ranking_average_precision`."""

    fields = _LABEL_SCORES
    function = staticmethod(label_ranking_average_precision)


# ---------------------------------------------------------------- hashing


class HammingMAP(Metric):
    """Hamming-ranking mAP of every query seen against every database item seen.

    :func:`~pairloss.metrics.hashing.hamming_map` of :func:`~pairloss.metrics.hashing.hamming_ranking`:
    ``update(codes, labels)`` adds queries, ``update_database(codes, labels)`` database items (relaxed codes, bits
    by sign; class ids or multi-hot labels). Option ``top_k`` (all items when ``None``).
    """

    fields = (Field("codes"), Field("labels"))
    reference_fields = (Field("database_codes", optional=True), Field("database_labels", optional=True))

    def __init__(self, top_k: int | None = None, *, sync_on_compute: bool = True, process_group: Any = None) -> None:
        super().__init__(sync_on_compute=sync_on_compute, process_group=process_group)
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k = top_k

    def update_database(self, codes: Tensor, labels: Tensor) -> None:
        """Add database items (ranked for every query)."""
        self._add_reference(codes, labels)

    def evaluate(self, **inputs: Tensor | None) -> Any:
        """Hamming mAP of the given queries against the given database (by default this rank's database so far)."""
        if "database_codes" not in inputs:  # forward: this batch of queries against the database so far
            inputs |= self._local(self.reference_fields)
        codes, labels = _host(inputs["codes"]), _host(inputs["labels"])
        database, database_labels = _host(inputs["database_codes"]), _host(inputs["database_labels"])
        if database is None or database_labels is None:
            raise ValueError(f"{type(self).__name__} needs a database: call update_database()")
        assert codes is not None and labels is not None
        return hamming_map(hamming_ranking(codes, labels, database, database_labels), self.top_k)
