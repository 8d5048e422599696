"""Retrieval metrics from exact nearest neighbours: Recall@k, precision@k, R-precision and MAP@R.

Definitions follow pytorch-metric-learning's ``AccuracyCalculator`` and Musgrave, Belongie, Lim, "A Metric
Learning Reality Check", ECCV 2020. For a query ``q`` with label ``y_q``, let ``rel_q(i) = 1`` when its
``i``-th nearest reference has label ``y_q`` and ``R_q`` the number of references with label ``y_q`` (the
query itself not counted when it is in the reference set):

* ``recall@k``: ``1[Σ_{i≤k} rel_q(i) ≥ 1]`` (PML's ``precision_at_1`` for ``k = 1``);
* ``precision@k``: ``(1/k) Σ_{i≤k} rel_q(i)``;
* ``r_precision``: ``(1/R_q) Σ_{i≤R_q} rel_q(i)``;
* ``map@r``: ``(1/R_q) Σ_{i≤R_q} rel_q(i) · P_q(i)`` with ``P_q(i) = (1/i) Σ_{j≤i} rel_q(j)``.

Each metric is the mean over the queries whose class has at least one reference (PML leaves the other, "lone",
queries out); with ``avg_of_avgs`` it is the mean over classes of the per-class means. When the query set is
the reference set, each query's own entry is removed from its neighbour list.

The neighbours come from faiss (exact ``IndexFlatIP`` / ``IndexFlatL2``), searched in chunks of queries so
that memory stays ``O(chunk · max(k, max_q R_q))`` however many queries there are.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pairloss._optional import require
from pairloss._validation import check_choice, check_embeddings, check_labels, undefined

if TYPE_CHECKING:
    import faiss

__all__ = ["METRICS", "retrieval", "retrieval_per_query"]

#: The distances the neighbour search supports: cosine (normalise, then inner product), raw inner product, L2.
METRICS = ("cosine", "ip", "l2")

#: Bytes per neighbour entry held while a chunk is scored (indices, distances, labels, running sums).
_BYTES_PER_NEIGHBOUR = 48

#: Fewest queries per faiss call: tiny searches cost far more in thread start-up than in arithmetic.
_MIN_CHUNK = 64

#: Below this many multiply-adds a search runs on one thread: on a busy machine OpenMP's start-up and
#: spinning then cost far more (10× measured on 2 shared cores) than the arithmetic itself.
_SINGLE_THREAD_WORK = 2**27


def retrieval(
    query: Tensor,
    query_labels: Tensor,
    reference: Tensor | None = None,
    reference_labels: Tensor | None = None,
    k: int | Sequence[int] = (1, 2, 4, 8),
    *,
    metric: str = "cosine",
    ref_includes_query: bool = False,
    avg_of_avgs: bool = False,
    memory_budget: int = 256 * 2**20,
) -> dict[str, float]:
    """Recall@k, precision@k, R-precision and MAP@R of ``query`` against ``reference``.

    Definitions (pytorch-metric-learning's ``AccuracyCalculator``; Musgrave et al., "A Metric Learning Reality
    Check", ECCV 2020), with ``rel_q(i)`` = 1 when the ``i``-th neighbour of ``q`` shares its label and
    ``R_q`` the number of references that do:

        recall@k = mean_q 1[Σ_{i≤k} rel_q(i) ≥ 1]        precision@k = mean_q (1/k) Σ_{i≤k} rel_q(i)
        r_precision = mean_q (1/R_q) Σ_{i≤R_q} rel_q(i)  map@r = mean_q (1/R_q) Σ_{i≤R_q} rel_q(i) P_q(i)

    Args:
        query: ``[N, D]`` query embeddings.
        query_labels: ``[N]`` integer class ids.
        reference, reference_labels: the gallery ``[M, D]`` and its labels ``[M]``; by default the queries
            themselves, each query's own entry excluded.
        k: the cut-offs of recall@k and precision@k.
        metric: ``"cosine"`` (L2-normalise, then inner product), ``"ip"`` (raw inner product) or ``"l2"``
            (Euclidean, PML's default ``FaissKNN``; identical ranking to cosine on normalised embeddings).
        ref_includes_query: the first ``N`` references are the queries themselves (PML's argument of the same
            name); each query's own entry is then excluded, as when ``reference`` is omitted.
        avg_of_avgs: average per class first, then over classes (PML's ``avg_of_avgs``).
        memory_budget: bytes the neighbour lists of one chunk of queries may take.

    Returns:
        ``{"recall@k": ..., "precision@k": ..., "r_precision": ..., "map@r": ...}`` (one
        ``recall@``/``precision@`` entry per ``k``), each a float; NaN, with a ``RuntimeWarning``, when no
        query has a same-label reference (as in PML).
    """
    per_query = retrieval_per_query(
        query,
        query_labels,
        reference,
        reference_labels,
        k,
        metric=metric,
        ref_includes_query=ref_includes_query,
        memory_budget=memory_budget,
    )
    counted = ~torch.isnan(per_query["map@r"])
    labels = query_labels.to(counted.device)[counted]
    if not bool(counted.any()):
        undefined("every retrieval metric", "no query has a reference with its label")
    results: dict[str, float] = {}
    for name, values in per_query.items():
        values = values[counted]
        if values.numel() == 0:
            results[name] = float("nan")
        elif avg_of_avgs:
            classes, inverse = torch.unique(labels, return_inverse=True)
            sums = torch.zeros(classes.numel(), dtype=values.dtype, device=values.device)
            counts = torch.zeros_like(sums)
            sums.index_add_(0, inverse, values)
            counts.index_add_(0, inverse, torch.ones_like(values))
            results[name] = float((sums / counts).mean())
        else:
            results[name] = float(values.mean())
    return results


def retrieval_per_query(
    query: Tensor,
    query_labels: Tensor,
    reference: Tensor | None = None,
    reference_labels: Tensor | None = None,
    k: int | Sequence[int] = (1, 2, 4, 8),
    *,
    metric: str = "cosine",
    ref_includes_query: bool = False,
    memory_budget: int = 256 * 2**20,
) -> dict[str, Tensor]:
    """The per-query values behind :func:`retrieval`: one float64 tensor ``[N]`` per metric.

    Same arguments and definitions as :func:`retrieval`. Lone queries (no reference shares their label) get
    NaN in every metric. The tensors live on ``query``'s device.
    """
    ks = _check_ks(k)
    check_choice(metric, "metric", METRICS)
    check_embeddings(query, "query")
    query_labels = _check_class_ids(query_labels, query.shape[0], "query_labels")
    if (reference is None) != (reference_labels is None):
        raise ValueError("reference and reference_labels must be given together")
    if reference is None or reference_labels is None:
        reference, reference_labels, ref_includes_query = query, query_labels, True
    else:
        check_embeddings(reference, "reference")
        reference_labels = _check_class_ids(reference_labels, reference.shape[0], "reference_labels")
        if reference.shape[1] != query.shape[1]:
            raise ValueError(f"reference has {reference.shape[1]} features but query has {query.shape[1]}")
        if ref_includes_query and reference.shape[0] < query.shape[0]:
            raise ValueError("ref_includes_query needs the queries as the first rows of reference")
    if memory_budget <= 0:
        raise ValueError(f"memory_budget must be > 0, got {memory_budget}")

    n_available = reference.shape[0] - int(ref_includes_query)
    if ks[-1] > n_available:
        raise ValueError(f"k={ks[-1]} exceeds the {n_available} references each query can retrieve")

    device = query.device
    q_labels = query_labels.detach().cpu().to(torch.int64)
    r_labels = reference_labels.detach().cpu().to(torch.int64)
    relevant = _relevant_counts(q_labels, r_labels, ref_includes_query)
    depth = max(ks[-1], int(relevant.max()))
    index = _build_index(reference, metric)
    chunk = max(_MIN_CHUNK, memory_budget // (_BYTES_PER_NEIGHBOUR * (depth + 1)))

    names = [f"recall@{n}" for n in ks] + [f"precision@{n}" for n in ks] + ["r_precision", "map@r"]
    out = {name: torch.empty(query.shape[0], dtype=torch.float64) for name in names}
    queries = _search_matrix(query, metric)
    faiss = require("faiss", "retrieval")
    threads = faiss.omp_get_max_threads()
    if min(chunk, query.shape[0]) * reference.shape[0] * reference.shape[1] < _SINGLE_THREAD_WORK:
        faiss.omp_set_num_threads(1)
    try:
        for start in range(0, query.shape[0], chunk):
            stop = min(start + chunk, query.shape[0])
            neighbours = _neighbours(index, queries[start:stop], depth, start if ref_includes_query else None)
            hits = r_labels[neighbours] == q_labels[start:stop, None]
            for name, values in _score_chunk(hits, relevant[start:stop], ks).items():
                out[name][start:stop] = values
    finally:
        faiss.omp_set_num_threads(threads)
    lone = relevant == 0
    for values in out.values():
        values[lone] = float("nan")
    return {name: values.to(device) for name, values in out.items()}


def _check_ks(k: int | Sequence[int]) -> list[int]:
    if isinstance(k, numbers.Integral):
        ks: list[object] = [k]
    elif isinstance(k, Sequence) and not isinstance(k, str):
        ks = list(k)
    else:
        ks = []
    if not ks or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and int(n) >= 1 for n in ks):
        raise ValueError(f"k must be a positive int or a non-empty sequence of them, got {k!r}")
    return sorted({int(n) for n in ks if isinstance(n, numbers.Integral)})


def _check_class_ids(labels: Tensor, n: int, name: str) -> Tensor:
    labels = check_labels(labels, n, name)
    if labels.ndim != 1 or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be 1-D integer class ids, got shape {tuple(labels.shape)} {labels.dtype}")
    return labels


def _relevant_counts(query_labels: Tensor, reference_labels: Tensor, ref_includes_query: bool) -> Tensor:
    """``R_q``: how many references share each query's label (the query's own entry not counted)."""
    classes, counts = torch.unique(reference_labels, return_counts=True)
    position = torch.searchsorted(classes, query_labels).clamp_max(classes.numel() - 1)
    relevant = torch.where(classes[position] == query_labels, counts[position], torch.zeros_like(counts[position]))
    return relevant - int(ref_includes_query)


def _search_matrix(x: Tensor, metric: str) -> np.ndarray:
    x = x.detach()
    if metric == "cosine":
        x = F.normalize(x.to(torch.float32), p=2, dim=1)
    return np.ascontiguousarray(x.cpu().to(torch.float32).numpy())


def _build_index(reference: Tensor, metric: str) -> faiss.Index:
    matrix = _search_matrix(reference, metric)
    faiss = require("faiss", "retrieval")
    index = faiss.IndexFlatL2(matrix.shape[1]) if metric == "l2" else faiss.IndexFlatIP(matrix.shape[1])
    index.add(matrix)
    return index


def _neighbours(index: faiss.Index, queries: np.ndarray, depth: int, self_offset: int | None) -> Tensor:
    """The ``depth`` nearest references of each query, its own entry removed when ``self_offset`` is given.

    As in PML, the search asks for one more neighbour and drops the query's own index; in the rare row where a
    tie pushed it out of the list, the last neighbour is dropped instead.
    """
    extra = int(self_offset is not None)
    _, found = index.search(queries, depth + extra)
    neighbours = torch.from_numpy(found)
    if self_offset is None:
        return neighbours
    own = torch.arange(self_offset, self_offset + queries.shape[0])[:, None]
    drop = neighbours == own
    drop[~drop.any(dim=1), -1] = True
    return neighbours[~drop].view(queries.shape[0], depth)


def _score_chunk(hits: Tensor, relevant: Tensor, ks: list[int]) -> dict[str, Tensor]:
    """Every metric of a chunk from its ``[c, depth]`` hit matrix and ``R_q`` per query."""
    cumulative = hits.cumsum(dim=1, dtype=torch.int64)
    scores: dict[str, Tensor] = {}
    for n in ks:
        scores[f"recall@{n}"] = (cumulative[:, n - 1] > 0).to(torch.float64)
    for n in ks:
        scores[f"precision@{n}"] = cumulative[:, n - 1].to(torch.float64) / n
    depth = hits.shape[1]
    ranks = torch.arange(1, depth + 1, dtype=torch.float64)
    within_r = ranks[None, :] <= relevant[:, None]
    denominator = relevant.clamp_min(1).to(torch.float64)
    last = (relevant.clamp(1, depth) - 1)[:, None]
    scores["r_precision"] = cumulative.gather(1, last).squeeze(1).to(torch.float64) / denominator
    precision_at_hits = torch.where(hits & within_r, cumulative.to(torch.float64) / ranks, 0.0)
    scores["map@r"] = precision_at_hits.sum(dim=1) / denominator
    return scores
