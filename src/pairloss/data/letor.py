"""Streaming reader of svmlight / LETOR ranking files (MSLR-WEB10K/30K, Yahoo! LTR, Istella).

Each line is one document of one query::

    <relevance> qid:<query id> <index>:<value> <index>:<value> ... [# comment]

Feature indices are 1-based (``zero_based=True`` for files that start at 0) and strictly increasing on a line;
missing features are 0. The lines of one query must be contiguous (the files are grouped by query; a qid that
comes back after another query is an error, the usual symptom of an unsorted or concatenated file). Malformed
lines, bytes that are not valid text in the file's ``encoding`` (UTF-8 by default) and a truncated ``.gz`` raise
``ValueError`` naming the file and the line number; so does a file without a single document line. ``.gz`` files
are read transparently.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from pairloss.data._text import read_lines

__all__ = ["LetorData", "LetorQuery", "iter_letor", "load_letor"]


@dataclass(frozen=True)
class LetorQuery:
    """The documents of one query: ``features [m, d]`` (float32), ``relevance [m]`` (float32), ``qid``."""

    qid: str
    features: NDArray[np.float32]
    relevance: NDArray[np.float32]


@dataclass(frozen=True)
class LetorData:
    """A whole file: ``features [n, d]``, ``relevance [n]``, ``group [n]`` (query index 0..Q−1), ``qids [Q]``."""

    features: NDArray[np.float32]
    relevance: NDArray[np.float32]
    group: NDArray[np.int64]
    qids: list[str]


def _parse_line(
    line: str, where: str, zero_based: bool, n_features: int | None
) -> tuple[float, str, list[int], list[float]] | None:
    body = line.split("#", 1)[0].strip()
    if not body:
        return None
    tokens = body.split()
    try:
        relevance = float(tokens[0])
    except ValueError:
        raise ValueError(f"{where}: relevance {tokens[0]!r} is not a number") from None
    if not math.isfinite(relevance) or relevance < 0:
        raise ValueError(f"{where}: relevance must be a finite number >= 0, got {tokens[0]!r}")
    if len(tokens) < 2 or not tokens[1].startswith("qid:") or len(tokens[1]) == 4:
        raise ValueError(f"{where}: expected 'qid:<id>' after the relevance, got {tokens[1:2] or 'nothing'}")
    qid = tokens[1][4:]
    indices: list[int] = []
    values: list[float] = []
    offset = 0 if zero_based else 1
    for token in tokens[2:]:
        key, sep, raw = token.partition(":")
        try:
            index = int(key) - offset
            value = float(raw)
        except ValueError:
            raise ValueError(f"{where}: malformed feature {token!r} (expected <index>:<value>)") from None
        if not sep:
            raise ValueError(f"{where}: malformed feature {token!r} (expected <index>:<value>)")
        if index < 0:
            raise ValueError(f"{where}: feature index {key} is below {offset}")
        if n_features is not None and index >= n_features:
            raise ValueError(f"{where}: feature index {key} exceeds n_features={n_features}")
        if indices and index <= indices[-1]:
            raise ValueError(
                f"{where}: feature indices must be strictly increasing, {key} follows {indices[-1] + offset}"
            )
        if not math.isfinite(value):
            raise ValueError(f"{where}: feature {key} has a non-finite value {raw!r}")
        indices.append(index)
        values.append(value)
    return relevance, qid, indices, values


def iter_letor(
    path: str | Path, n_features: int | None = None, *, zero_based: bool = False, encoding: str = "utf-8"
) -> Iterator[LetorQuery]:
    """Yield the queries of a LETOR file one at a time (memory: one query).

    Each query's ``features`` has ``n_features`` columns when given, else as many as its largest index.
    """
    path = Path(path)
    if n_features is not None and (isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1):
        raise ValueError(f"n_features must be a positive int or None, got {n_features!r}")
    seen: set[str] = set()
    current: str | None = None
    rows: list[tuple[list[int], list[float]]] = []
    labels: list[float] = []

    def flush() -> LetorQuery:
        assert current is not None
        width = n_features if n_features is not None else max((r[0][-1] + 1 for r in rows if r[0]), default=0)
        dense = np.zeros((len(rows), width), dtype=np.float32)
        for k, (idx, val) in enumerate(rows):
            dense[k, idx] = val
        return LetorQuery(current, dense, np.asarray(labels, dtype=np.float32))

    for lineno, line in read_lines(path, encoding):
        parsed = _parse_line(line, f"{path}:{lineno}", zero_based, n_features)
        if parsed is None:
            continue
        relevance, qid, indices, values = parsed
        if qid != current:
            if qid in seen:
                raise ValueError(
                    f"{path}:{lineno}: qid {qid} appears again after other queries; the lines of a query must "
                    "be contiguous (sort the file by qid)"
                )
            if current is not None:
                yield flush()
            seen.add(qid)
            current, rows, labels = qid, [], []
        rows.append((indices, values))
        labels.append(relevance)
    if current is None:
        raise ValueError(f"{path}: no document lines ('<relevance> qid:<id> <index>:<value> ...') in the file")
    yield flush()


def load_letor(
    path: str | Path, n_features: int | None = None, *, zero_based: bool = False, encoding: str = "utf-8"
) -> LetorData:
    """Read a whole LETOR file into flat arrays (see :func:`iter_letor`); widths are padded to the largest."""
    queries = list(iter_letor(path, n_features, zero_based=zero_based, encoding=encoding))
    width = n_features if n_features is not None else max((q.features.shape[1] for q in queries), default=0)
    n = sum(len(q.relevance) for q in queries)
    features = np.zeros((n, width), dtype=np.float32)
    start = 0
    for q in queries:
        features[start : start + len(q.relevance), : q.features.shape[1]] = q.features
        start += len(q.relevance)
    relevance = np.concatenate([q.relevance for q in queries]) if queries else np.zeros(0, dtype=np.float32)
    group = np.repeat(np.arange(len(queries), dtype=np.int64), [len(q.relevance) for q in queries])
    return LetorData(features, relevance, group, [q.qid for q in queries])
