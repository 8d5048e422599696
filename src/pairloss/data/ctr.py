"""Loader of CTR logs in CSV or Parquet: one row per impression with a request id, features and a click.

Request ids may be any strings or integers; they are mapped to dense codes ``0 .. R−1`` in order of first
appearance, ready for the ``group_ids`` argument of the ranking and calibrated-ranking losses. Parquet needs
``pyarrow``. Every problem with the file (a missing or repeated column, a malformed row, bytes that are not valid
text in the file's ``encoding``, a file with no rows) raises ``ValueError`` naming the file and, for CSV, the line.
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

from pairloss.data._text import read_lines

__all__ = ["CTRTable", "load_ctr_log"]


@dataclass(frozen=True)
class CTRTable:
    """``features [n, d]`` (float32), ``click [n]`` (float32 0/1), ``request [n]`` (int64 codes) and names."""

    features: NDArray[np.float32]
    click: NDArray[np.float32]
    request: NDArray[np.int64]
    feature_names: list[str]
    request_ids: list[str]


def _read_parquet(path: Path) -> dict[str, list[Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ValueError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from error
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises its own ArrowInvalid / OSError kinds
        raise ValueError(f"{path}: not a readable Parquet file ({error})") from None
    if len(set(table.column_names)) != len(table.column_names):
        raise ValueError(f"{path}: repeated column names {table.column_names}")
    return {name: list(column) for name, column in table.to_pydict().items()}


def _read_csv(path: Path, encoding: str) -> tuple[dict[str, list[Any]], list[int]]:
    """The columns of a CSV file and the line each row ends on (blank lines are skipped)."""
    lines = (text for _, text in read_lines(path, encoding, keep_ends=True))
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file, expected a header line")
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise ValueError(f"{path}:1: repeated column name(s) {repeated} in the header")
        columns: dict[str, list[Any]] = {name: [] for name in header}
        line_numbers: list[int] = []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}:{reader.line_num}: {len(row)} fields, the header has {len(header)}")
            for name, value in zip(header, row, strict=True):
                columns[name].append(value)
            line_numbers.append(reader.line_num)
    except csv.Error as error:
        raise ValueError(f"{path}:{reader.line_num}: malformed CSV ({error})") from None
    return columns, line_numbers


def load_ctr_log(
    path: str | Path,
    *,
    request_col: str = "request_id",
    click_col: str = "click",
    feature_cols: Sequence[str] | None = None,
    encoding: str = "utf-8",
) -> CTRTable:
    """Read a CTR log (``.csv``, or ``.parquet``/``.pq``; a CSV file in ``encoding``, UTF-8 by default).

    ``feature_cols`` defaults to every column except the request id and the click. Raises ``ValueError`` naming the
    file (and, for CSV, the line) on a missing column, a click that is not 0/1, a non-numeric / non-finite
    feature value, or a file without rows.
    """
    path = Path(path)
    line_numbers: list[int] | None = None
    if path.suffix in (".parquet", ".pq"):
        columns = _read_parquet(path)
    else:
        columns, line_numbers = _read_csv(path, encoding)
    for name in (request_col, click_col, *(feature_cols or ())):
        if name not in columns:
            raise ValueError(f"{path}: no column {name!r}; columns are {list(columns)}")
    names = (
        list(feature_cols) if feature_cols is not None else [c for c in columns if c not in (request_col, click_col)]
    )
    n = len(columns[click_col])
    if n == 0:
        raise ValueError(f"{path}: no impressions (the file has a header but no rows)")

    def where(row: int) -> str:
        return f"{path}:{line_numbers[row]}" if line_numbers is not None else f"{path} row {row}"

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
