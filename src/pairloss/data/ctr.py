"""Loader of CTR logs in CSV or Parquet: one row per impression with a request id, features and a click.

Request ids may be any strings or integers; they are mapped to dense codes ``0 .. R−1`` in order of first
appearance, ready for the ``group_ids`` argument of the ranking and calibrated-ranking losses. Parquet needs
``pyarrow``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["CTRTable", "load_ctr_log"]


@dataclass(frozen=True)
class CTRTable:
    """``features [n, d]`` (float32), ``click [n]`` (float32 0/1), ``request [n]`` (int64 codes) and names."""

    features: NDArray[np.float32]
    click: NDArray[np.float32]
    request: NDArray[np.int64]
    feature_names: list[str]
    request_ids: list[str]


def _read_columns(path: Path) -> dict[str, list[Any]]:
    if path.suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ValueError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from error
        return {name: list(column) for name, column in pq.read_table(path).to_pydict().items()}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file, expected a header line")
        columns: dict[str, list[Any]] = {name: [] for name in header}
        for lineno, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ValueError(f"{path}:{lineno}: {len(row)} fields, the header has {len(header)}")
            for name, value in zip(header, row, strict=True):
                columns[name].append(value)
    return columns


def load_ctr_log(
    path: str | Path,
    *,
    request_col: str = "request_id",
    click_col: str = "click",
    feature_cols: Sequence[str] | None = None,
) -> CTRTable:
    """Read a CTR log (``.csv``, or ``.parquet``/``.pq``).

    ``feature_cols`` defaults to every column except the request id and the click. Raises ``ValueError`` naming the
    file (and, for CSV, the line) on a missing column, a click that is not 0/1, or a non-numeric / non-finite
    feature value.
    """
    path = Path(path)
    columns = _read_columns(path)
    for name in (request_col, click_col, *(feature_cols or ())):
        if name not in columns:
            raise ValueError(f"{path}: no column {name!r}; columns are {list(columns)}")
    names = (
        list(feature_cols) if feature_cols is not None else [c for c in columns if c not in (request_col, click_col)]
    )
    n = len(columns[click_col])
    csv_lines = path.suffix not in (".parquet", ".pq")

    def where(row: int) -> str:
        return f"{path}:{row + 2}" if csv_lines else f"{path} row {row}"

    click = np.empty(n, dtype=np.float32)
    for row, value in enumerate(columns[click_col]):
        try:
            c = float(value)
        except (TypeError, ValueError):
            c = math.nan
        if c not in (0.0, 1.0):
            raise ValueError(f"{where(row)}: click must be 0 or 1, got {value!r}")
        click[row] = c
    features = np.empty((n, len(names)), dtype=np.float32)
    for k, name in enumerate(names):
        for row, value in enumerate(columns[name]):
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{where(row)}: feature {name!r} is not a number: {value!r}") from None
            if not math.isfinite(v):
                raise ValueError(f"{where(row)}: feature {name!r} is not finite: {value!r}")
            features[row, k] = v
    request_ids: dict[str, int] = {}
    request = np.array([request_ids.setdefault(str(r), len(request_ids)) for r in columns[request_col]], dtype=np.int64)
    return CTRTable(features, click, request, names, list(request_ids))
