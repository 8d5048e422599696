"""A sparse ``[b, M]`` matrix of pair weights with the few operations the similarity gradients need.

Hinge losses give most pairs a zero slope; their gradient is then cheaper through compressed-row matrix products
than through two dense matmuls over the whole block. The object offers what the similarity gradients use of the
dense weight matrix: ``W.T``, ``W.sum(1, keepdim=True)``, ``W.sum(0)`` and ``out += alpha · W @ X``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SparsePairWeights"]


@dataclass(frozen=True)
class SparsePairWeights:
    """Weights ``values[p]`` at ``(rows[p], columns[p])`` of a ``shape`` matrix; ``rows`` sorted (row-major order,
    as :func:`torch.nonzero` returns them)."""

    rows: Tensor
    columns: Tensor
    values: Tensor
    shape: tuple[int, int]

    @classmethod
    def from_dense(cls, dense: Tensor, dtype: torch.dtype) -> SparsePairWeights:
        """The non-zero entries of ``dense`` (a boolean matrix stands for its 0/1 indicator) as ``dtype`` values."""
        rows, columns = dense.nonzero(as_tuple=True)
        values = dense[rows, columns].to(dtype)
        return cls(rows, columns, values, (dense.shape[0], dense.shape[1]))

    def with_values(self, values: Tensor) -> SparsePairWeights:
        return SparsePairWeights(self.rows, self.columns, values, self.shape)

    @property
    def T(self) -> SparsePairWeights:
        order = torch.argsort(self.columns, stable=True)
        return SparsePairWeights(
            self.columns[order], self.rows[order], self.values[order], (self.shape[1], self.shape[0])
        )

    def sum(self, dim: int, keepdim: bool = False) -> Tensor:
        index = self.rows if dim == 1 else self.columns
        totals = torch.zeros(self.shape[1 - dim], dtype=self.values.dtype, device=self.values.device)
        totals.index_add_(0, index, self.values)
        return totals[:, None] if keepdim else totals

    def add_product_to(self, out: Tensor, dense: Tensor, alpha: float = 1.0) -> None:
        """``out += alpha · W @ dense`` in place, through a compressed-row sparse matrix."""
        counts = torch.bincount(self.rows, minlength=self.shape[0])
        row_starts = torch.zeros(self.shape[0] + 1, dtype=torch.long, device=self.rows.device)
        torch.cumsum(counts, 0, out=row_starts[1:])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
            matrix = torch.sparse_csr_tensor(
                row_starts, self.columns, self.values.to(dense.dtype), self.shape, check_invariants=False
            )
            out.addmm_(matrix, dense, alpha=alpha)

    def to_dense(self) -> Tensor:
        dense = torch.zeros(self.shape, dtype=self.values.dtype, device=self.values.device)
        dense[self.rows, self.columns] = self.values
        return dense
