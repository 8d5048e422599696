"""Hamming-ranking evaluation of binary codes, on faiss binary indexes.

Relaxed codes ``u [n, K]`` become bits ``b = sign(u)`` with ``sign(0) = +1``, packed 8 bits a byte (``K`` not a
multiple of 8 is padded with zero bits, which leaves every Hamming distance unchanged). The database is ranked for
each query by Hamming distance with ``faiss.IndexBinaryFlat``; **ties are broken by database index** (ascending), so
the ranking, and every measure below, is deterministic. A database item is relevant to a query when they share a
label (equal class ids, or a common label for multi-hot ``[n, C]`` labels).

* :func:`hamming_map`: mAP over the top ``top_k`` items (all when ``None``),
  ``AP = 1/R Σ_{k ≤ top_k} P@k · rel_k`` with ``R`` the relevant items among the top ``top_k``; a query with no
  relevant item there scores **0 and stays in the mean**.
* :func:`precision_within_radius`: precision of the items within Hamming distance ``r`` (2 by default); a query
  whose Hamming ball is empty scores **0** and stays in the mean.
* :func:`precision_recall_curve`: mean precision and recall of the Hamming ball for every radius ``0..K``; the
  precision is averaged over the queries whose ball is non-empty (NaN where all are empty), the recall over all
  queries with at least one relevant item.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from torch import Tensor

from pairloss._optional import require
from pairloss._validation import check_int

__all__ = [
    "HammingRanking",
    "hamming_map",
    "hamming_ranking",
    "pack_codes",
    "precision_recall_curve",
    "precision_within_radius",
]

ArrayLike = NDArray[np.generic] | Tensor

#: Queries searched at once (each holds a ``[chunk, n_database]`` distance block).
_QUERY_CHUNK = 1024


def _as_numpy(x: ArrayLike) -> NDArray[np.generic]:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def pack_codes(codes: ArrayLike) -> NDArray[np.uint8]:
    """Bits ``u ≥ 0`` of ``[n, K]`` real codes, packed into ``[n, ceil(K/8)]`` bytes (faiss's binary layout)."""
    return _pack(codes, "codes")


def _pack(codes: ArrayLike, name: str) -> NDArray[np.uint8]:
    u = _as_numpy(codes)
    if u.ndim != 2 or u.shape[1] == 0:
        raise ValueError(f"{name} must be 2-D [n, K] with K >= 1, got shape {u.shape}")
    if u.shape[0] == 0:
        raise ValueError(f"{name} is empty: needs at least one code")
    if not (np.issubdtype(u.dtype, np.number) or u.dtype == np.bool_):
        raise ValueError(f"{name} must hold numbers, got dtype {u.dtype}")
    if np.issubdtype(u.dtype, np.floating) and not np.isfinite(u).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return np.packbits(np.asarray(u, dtype=np.float64) >= 0, axis=1)


def _relevance(query_labels: ArrayLike, db_labels: ArrayLike) -> NDArray[np.bool_]:
    q = _as_numpy(query_labels)
    d = _as_numpy(db_labels)
    if q.ndim != d.ndim or q.ndim not in (1, 2):
        raise ValueError("query and database labels must both be 1-D class ids or both 2-D multi-hot")
    for name, labels in (("query_labels", q), ("db_labels", d)):
        if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
            values = np.asarray(labels, dtype=np.float64) if np.issubdtype(labels.dtype, np.floating) else None
            if values is None or not np.isfinite(values).all():
                raise ValueError(f"{name} must be integer class ids or 0/1 multi-hot, got dtype {labels.dtype}")
            if (values != np.round(values)).any():
                raise ValueError(f"{name} must be integer class ids or 0/1 multi-hot, got fractional values")
        if labels.ndim == 2 and not np.isin(labels, (0, 1)).all():
            raise ValueError(f"multi-hot {name} must contain only 0 and 1")
    if q.ndim == 1:
        return np.asarray(q[:, None] == d[None, :])
    return np.asarray(q.astype(np.float64) @ d.astype(np.float64).T > 0)


@dataclass(frozen=True)
class HammingRanking:
    """The database ranked for every query: ``indices[q]`` by ascending ``distances[q]``, ties by index."""

    distances: NDArray[np.int64]
    indices: NDArray[np.int64]
    relevant: NDArray[np.bool_]
    n_bits: int


def hamming_ranking(
    query_codes: ArrayLike, query_labels: ArrayLike, db_codes: ArrayLike, db_labels: ArrayLike
) -> HammingRanking:
    """Rank the whole database for each query with ``faiss.IndexBinaryFlat`` (exact Hamming search).

    ``relevant[q, k]`` says whether the ``k``-th ranked item shares a label with query ``q``.
    """
    q_packed, d_packed = _pack(query_codes, "query_codes"), _pack(db_codes, "db_codes")
    n_bits = _as_numpy(query_codes).shape[1]
    if _as_numpy(db_codes).shape[1] != n_bits:
        raise ValueError("query and database codes must have the same number of bits")
    n_q, n_db = q_packed.shape[0], d_packed.shape[0]
    if n_db == 0:
        raise ValueError("the database is empty")
    for name, labels, n in (("query_labels", query_labels, n_q), ("db_labels", db_labels, n_db)):
        if len(_as_numpy(labels)) != n:
            raise ValueError(f"{name} has {len(_as_numpy(labels))} entries for {n} codes: each code needs a label")
    faiss = require("faiss", "retrieval")
    index = faiss.IndexBinaryFlat(8 * d_packed.shape[1])
    index.add(d_packed)
    distances = np.empty((n_q, n_db), dtype=np.int64)
    indices = np.empty((n_q, n_db), dtype=np.int64)
    for start in range(0, n_q, _QUERY_CHUNK):
        dist, idx = index.search(q_packed[start : start + _QUERY_CHUNK], n_db)
        order = np.lexsort((idx, dist))
        distances[start : start + _QUERY_CHUNK] = np.take_along_axis(dist, order, 1)
        indices[start : start + _QUERY_CHUNK] = np.take_along_axis(idx, order, 1)
    relevant = np.take_along_axis(_relevance(query_labels, db_labels), indices, 1)
    return HammingRanking(distances, indices, relevant, n_bits)


def hamming_map(ranking: HammingRanking, top_k: int | None = None) -> float:
    """Mean average precision of the Hamming ranking over the top ``top_k`` items (all when ``None``).

    ``AP_q = 1/R_q Σ_{k ≤ top_k} P_q@k · rel_qk`` with ``R_q`` the relevant items in the top ``top_k``; 0 when
    ``R_q = 0`` (the query stays in the mean).
    """
    if top_k is not None:
        check_int(top_k, "top_k", minimum=1)
    rel = ranking.relevant if top_k is None else ranking.relevant[:, :top_k]
    hits = np.cumsum(rel, axis=1)
    precision_at_k = hits / np.arange(1, rel.shape[1] + 1)
    found = rel.sum(1)
    ap = np.where(found > 0, (precision_at_k * rel).sum(1) / np.maximum(found, 1), 0.0)
    return float(ap.mean())


def precision_within_radius(ranking: HammingRanking, radius: int = 2) -> float:
    """Mean precision of the items within Hamming distance ``radius``; 0 for a query whose ball is empty."""
    check_int(radius, "radius", minimum=0)
    inside = ranking.distances <= radius
    retrieved = inside.sum(1)
    precision = np.where(retrieved > 0, (inside & ranking.relevant).sum(1) / np.maximum(retrieved, 1), 0.0)
    return float(precision.mean())


def precision_recall_curve(ranking: HammingRanking) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean ``(precision, recall)`` of the Hamming ball for radius ``r = 0..K`` (arrays of ``K + 1`` values).

    Precision is averaged over the queries whose ball is non-empty, recall over the queries with at least one
    relevant item in the database.
    """
    total_relevant = ranking.relevant.sum(1)
    has_relevant = total_relevant > 0
    precision = np.full(ranking.n_bits + 1, np.nan)
    recall = np.zeros(ranking.n_bits + 1)
    for r in range(ranking.n_bits + 1):
        inside = ranking.distances <= r
        retrieved = inside.sum(1)
        hits = (inside & ranking.relevant).sum(1)
        nonempty = retrieved > 0
        if nonempty.any():
            precision[r] = float((hits[nonempty] / retrieved[nonempty]).mean())
        if has_relevant.any():
            recall[r] = float((hits[has_relevant] / total_relevant[has_relevant]).mean())
    return precision, recall
