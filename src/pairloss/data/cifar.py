"""CIFAR-10 in its python batch format, and the retrieval split the deep-hashing papers use.

``root`` holds ``data_batch_1`` … ``data_batch_5`` and ``test_batch`` (the ``cifar-10-batches-py`` folder): pickled
dicts with ``b"data"`` (``[10000, 3072]`` uint8, channel-major 32×32) and ``b"labels"``.

The hashing split (:func:`hashing_split`) follows DPSH's first setting (Li, Wang, Kang, IJCAI 2016): from all 60,000
images, 100 per class form the query set and 500 per class the training set; the database is every image but the
queries (training images included).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["CIFAR10_FILES", "HashingSplit", "hashing_split", "load_cifar10"]

#: The batch files, in the order their images are concatenated.
CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")

_PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class HashingSplit:
    """Indices into the images: ``train``, ``query`` and ``database`` (all but the queries)."""

    train: NDArray[np.int64]
    query: NDArray[np.int64]
    database: NDArray[np.int64]


def _batch(path: Path) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    if not path.is_file():
        raise ValueError(f"{path}: missing (CIFAR-10 python batch)")
    try:
        with path.open("rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({error})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path}: a CIFAR-10 batch is a dict with b'data' and b'labels'")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        raise ValueError(f"{path}: b'data' must be uint8 [n, {_PIXELS}], got {data.dtype} {list(data.shape)}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {labels.size} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must be in 0..9")
    return data, labels


def load_cifar10(root: str | Path) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """All 60,000 images ``[N, 32, 32, 3]`` (uint8, HWC) and labels ``[N]``: the five training batches, then the
    test batch."""
    root = Path(root)
    parts = [_batch(root / name) for name in CIFAR10_FILES]
    data = np.concatenate([p[0] for p in parts])
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.concatenate([p[1] for p in parts])


def hashing_split(
    labels: NDArray[np.int64], query_per_class: int = 100, train_per_class: int = 500, seed: int = 0
) -> HashingSplit:
    """DPSH's setting 1: ``query_per_class`` queries and ``train_per_class`` training images drawn per class
    (disjoint, seeded); the database is every image that is not a query."""
    rng = np.random.default_rng(seed)
    query: list[NDArray[np.int64]] = []
    train: list[NDArray[np.int64]] = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        if len(members) < query_per_class + train_per_class:
            raise ValueError(
                f"class {c} has {len(members)} images; the split needs {query_per_class} + {train_per_class}"
            )
        query.append(members[:query_per_class])
        train.append(members[query_per_class : query_per_class + train_per_class])
    query_idx = np.sort(np.concatenate(query))
    database = np.setdiff1d(np.arange(len(labels)), query_idx)
    return HashingSplit(np.sort(np.concatenate(train)), query_idx, database)
